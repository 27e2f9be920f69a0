-- BM25 statistics maintained by the write path, and exact top-k keyword search with MaxScore pruning.
--
-- Until now every keyword query recounted N, the average length and each query term's df from
-- `chunks` and `chunk_terms`, and scored every posting of every query term: fine at Cranfield's
-- size, hundreds of milliseconds at a million chunks.
--
-- Statistics: every statement that writes `chunks` appends delta rows (its chunk count and total
-- length per collection, and per term its df change, highest tf and shortest chunk) in the
-- writer's transaction. Appends only: concurrent ingests never wait on a shared counter row.
-- `ragline_bm25_fold()` (the retriever calls it every few seconds) moves the deltas into one row
-- per collection and per term, in one transaction, so a query that reads folded rows plus the
-- deltas left sees exact statistics in any snapshot: the same N, total length and df as a recount.
--
-- Term upper bounds: a term's highest tf and shortest chunk among the postings ever added give an
-- upper bound of its BM25 contribution to any chunk for any k1 and b (the contribution grows with
-- tf and falls with dl). Deletes never lower the bound, so it stays valid, only looser.

CREATE TABLE bm25_collection_stats (
    collection_id bigint PRIMARY KEY,
    chunks bigint NOT NULL,
    total_length bigint NOT NULL
);

-- Appended by the write path, deleted by the fold; no key, so appends never conflict.
CREATE TABLE bm25_collection_deltas (
    collection_id bigint NOT NULL,
    chunks bigint NOT NULL,
    total_length bigint NOT NULL
);
CREATE INDEX bm25_collection_deltas_idx ON bm25_collection_deltas (collection_id);

CREATE TABLE bm25_term_stats (
    collection_id bigint NOT NULL,
    lexeme text COLLATE "C" NOT NULL,
    df bigint NOT NULL,
    max_tf integer NOT NULL,
    min_dl integer NOT NULL,
    PRIMARY KEY (collection_id, lexeme)
);

-- A delete's rows carry a negative df and no bounds (NULL).
CREATE TABLE bm25_term_deltas (
    collection_id bigint NOT NULL,
    lexeme text COLLATE "C" NOT NULL,
    df bigint NOT NULL,
    max_tf integer,
    min_dl integer
);
CREATE INDEX bm25_term_deltas_idx ON bm25_term_deltas (collection_id, lexeme);

-- The statistics of what is stored already.
INSERT INTO bm25_collection_stats (collection_id, chunks, total_length)
SELECT collection_id, count(*), sum(term_count) FROM chunks GROUP BY collection_id;
INSERT INTO bm25_term_stats (collection_id, lexeme, df, max_tf, min_dl)
SELECT collection_id, lexeme, count(*), max(tf), min(dl) FROM chunk_terms GROUP BY collection_id, lexeme;

CREATE FUNCTION ragline_bm25_stats_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, count(*), sum(term_count) FROM new_rows GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, df, max_tf, min_dl)
    SELECT n.collection_id, t.lexeme, count(*), max(coalesce(array_length(t.positions, 1), 1)), min(n.term_count)
    FROM new_rows AS n, unnest(n.tsv) AS t
    GROUP BY n.collection_id, t.lexeme;
    RETURN NULL;
END $$;

CREATE FUNCTION ragline_bm25_stats_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, -count(*), -sum(term_count) FROM old_rows GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, df)
    SELECT o.collection_id, t.lexeme, -count(*) FROM old_rows AS o, unnest(o.tsv) AS t
    GROUP BY o.collection_id, t.lexeme;
    RETURN NULL;
END $$;

CREATE FUNCTION ragline_bm25_stats_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, sum(chunks), sum(total_length) FROM (
        SELECT collection_id, 1 AS chunks, term_count AS total_length FROM new_rows
        UNION ALL
        SELECT collection_id, -1, -term_count FROM old_rows
    ) AS d GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, df, max_tf, min_dl)
    SELECT collection_id, lexeme, sum(df), max(max_tf), min(min_dl) FROM (
        SELECT n.collection_id, t.lexeme, 1 AS df, coalesce(array_length(t.positions, 1), 1) AS max_tf,
               n.term_count AS min_dl
        FROM new_rows AS n, unnest(n.tsv) AS t
        UNION ALL
        SELECT o.collection_id, t.lexeme, -1, NULL, NULL FROM old_rows AS o, unnest(o.tsv) AS t
    ) AS d GROUP BY collection_id, lexeme;
    RETURN NULL;
END $$;

CREATE TRIGGER chunks_bm25_stats_insert AFTER INSERT ON chunks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ragline_bm25_stats_insert();
CREATE TRIGGER chunks_bm25_stats_delete AFTER DELETE ON chunks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ragline_bm25_stats_delete();
CREATE TRIGGER chunks_bm25_stats_update AFTER UPDATE ON chunks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ragline_bm25_stats_update();

-- Folds the deltas its snapshot sees into the statistics, in the caller's transaction; deltas
-- committed meanwhile stay for the next fold. Two folders never run at once (the second returns
-- at once). Only the rows of the folded collections and terms are touched: a term whose df
-- reaches 0 and a collection whose chunk count reaches 0 lose their rows, which is also how a
-- deleted collection's statistics go (its chunks' deletion appended the deltas that empty them).
-- Returns the delta rows folded.
CREATE FUNCTION ragline_bm25_fold() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint := 0;
    terms bigint := 0;
    emptied bigint[];
    empty_collections bigint[];
    empty_lexemes text[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(7450625812580609) THEN
        RETURN 0;
    END IF;
    WITH gone AS (DELETE FROM bm25_collection_deltas RETURNING *),
    summed AS (
        SELECT collection_id, sum(chunks) AS chunks, sum(total_length) AS total_length, count(*) AS deltas
        FROM gone GROUP BY collection_id
    ),
    stored AS (
        INSERT INTO bm25_collection_stats AS s (collection_id, chunks, total_length)
        SELECT collection_id, chunks, total_length FROM summed
        ON CONFLICT (collection_id) DO UPDATE
        SET chunks = s.chunks + excluded.chunks, total_length = s.total_length + excluded.total_length
        RETURNING s.collection_id, s.chunks
    )
    SELECT (SELECT coalesce(sum(deltas), 0) FROM summed),
           (SELECT array_agg(collection_id) FROM stored WHERE chunks = 0)
    INTO folded, emptied;
    DELETE FROM bm25_collection_stats WHERE collection_id = ANY (emptied) AND chunks = 0;
    WITH gone AS (DELETE FROM bm25_term_deltas RETURNING *),
    summed AS (
        SELECT collection_id, lexeme, sum(df) AS df, max(max_tf) AS max_tf, min(min_dl) AS min_dl,
               count(*) AS deltas
        FROM gone GROUP BY collection_id, lexeme
    ),
    stored AS (
        INSERT INTO bm25_term_stats AS s (collection_id, lexeme, df, max_tf, min_dl)
        SELECT collection_id, lexeme, df, coalesce(max_tf, 0), coalesce(min_dl, 0) FROM summed
        ON CONFLICT (collection_id, lexeme) DO UPDATE
        SET df = s.df + excluded.df,
            max_tf = greatest(s.max_tf, excluded.max_tf),
            min_dl = CASE WHEN excluded.max_tf = 0 THEN s.min_dl ELSE least(s.min_dl, excluded.min_dl) END
        RETURNING s.collection_id, s.lexeme, s.df
    )
    SELECT (SELECT coalesce(sum(deltas), 0) FROM summed),
           (SELECT array_agg(collection_id ORDER BY collection_id, lexeme) FROM stored WHERE df = 0),
           (SELECT array_agg(lexeme ORDER BY collection_id, lexeme) FROM stored WHERE df = 0)
    INTO terms, empty_collections, empty_lexemes;
    DELETE FROM bm25_term_stats AS t
    USING unnest(empty_collections, empty_lexemes) AS z(collection_id, lexeme)
    WHERE t.collection_id = z.collection_id AND t.lexeme = z.lexeme AND t.df = 0;
    RETURN folded + terms;
END $$;

-- A collection's chunk count and average length: folded plus unfolded, exact in any snapshot.
CREATE FUNCTION ragline_bm25_collection(p_collection bigint, OUT n float8, OUT avgdl float8)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(chunks), 0)::float8, coalesce(sum(total_length)::float8 / nullif(sum(chunks), 0), 0)
    FROM (
        SELECT chunks, total_length FROM bm25_collection_stats WHERE collection_id = p_collection
        UNION ALL
        SELECT chunks, total_length FROM bm25_collection_deltas WHERE collection_id = p_collection
    ) AS s
$$;

-- Each distinct query lexeme the collection holds: its weight, Lucene's IDF
-- ln(1 + (N - df + 0.5) / (df + 0.5)) times k1 + 1, and the upper bound of its contribution
-- to any chunk's score, weight * max_tf / (max_tf + k1 * (1 - b + b * min_dl / avgdl)).
CREATE FUNCTION ragline_bm25_terms(p_collection bigint, p_lexemes text[], p_k1 float8, p_b float8)
RETURNS TABLE (lexeme text, weight float8, bound float8, df float8)
LANGUAGE sql STABLE AS $$
    SELECT t.lexeme, t.weight,
           t.weight * t.max_tf / (t.max_tf + p_k1 * (1 - p_b) + p_k1 * p_b * t.min_dl / greatest(c.avgdl, 1)),
           t.df
    FROM ragline_bm25_collection(p_collection) AS c,
         LATERAL (
             SELECT q.lexeme, ln(1 + (c.n - s.df + 0.5) / (s.df + 0.5)) * (p_k1 + 1) AS weight,
                    s.df, greatest(s.max_tf, 1)::float8 AS max_tf, s.min_dl::float8 AS min_dl
             FROM (SELECT DISTINCT unnest(p_lexemes) AS lexeme) AS q,
                  LATERAL (
                      SELECT sum(d.df)::float8 AS df, max(d.max_tf) AS max_tf, coalesce(min(d.min_dl), 0) AS min_dl
                      FROM (
                          SELECT ts.df, ts.max_tf, ts.min_dl FROM bm25_term_stats AS ts
                          WHERE ts.collection_id = p_collection AND ts.lexeme = q.lexeme
                          UNION ALL
                          SELECT td.df, td.max_tf, td.min_dl FROM bm25_term_deltas AS td
                          WHERE td.collection_id = p_collection AND td.lexeme = q.lexeme
                      ) AS d
                  ) AS s
             WHERE s.df > 0
         ) AS t
$$;

-- The exact top `p_k` chunks by BM25 for the query lexemes `p_lexemes`, best first (ties by id),
-- with MaxScore pruning (Turtle and Flood, 1995):
--  1. A threshold: the chunks best on the highest-bound terms (the rarest, whose postings total at
--     most 20,000 or are one term's) are scored fully; the k-th best of those scores, theta, is at
--     most the k-th best of the collection.
--  2. The terms, lowest bound first, whose bounds add up to less than theta are non-essential: a
--     chunk holding only those scores less than theta and cannot be in the top k, so only the
--     postings of the other (essential) terms are read. These are usually the rare terms, the
--     common terms with long postings the non-essential ones.
--  3. A chunk whose essential score plus the non-essential bounds is below theta is dropped too;
--     the others get their non-essential terms' contributions from those terms' postings, kept
--     only for the chunks left before they are summed (per-chunk primary-key lookups instead made
--     p50 411 ms, worst 2.5 s, against 250 ms / 0.56 s, on 20 Cranfield queries at 100,000 chunks).
-- Every chunk dropped scores below theta, so the result equals a full scan's. Comparisons allow
-- 1e-9 relative for floating-point sums in a different order.
-- `p_max_postings` bounds the effort instead (hybrid search's keyword list): while the essential
-- terms hold more postings than that, the lowest-bound one is treated as non-essential too, so a
-- chunk holding only such terms may be missed; the scores returned stay exact.
CREATE FUNCTION ragline_bm25_top_k(
    p_collection bigint, p_lexemes text[], p_k bigint, p_k1 float8, p_b float8,
    p_max_postings float8 DEFAULT 'Infinity'
) RETURNS TABLE (chunk_id bigint, score float8)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    k1_b float8;
    k1_b_avgdl float8;
    lexemes text[];
    weights float8[];
    bounds float8[];
    dfs float8[];
    terms integer;
    seed integer := 1;
    seed_postings float8;
    theta float8;
    essential integer;
    rest float8 := 0;
    essential_postings float8;
BEGIN
    SELECT p_k1 * (1 - p_b), p_k1 * p_b / greatest(c.avgdl, 1) INTO k1_b, k1_b_avgdl
    FROM ragline_bm25_collection(p_collection) AS c;
    SELECT array_agg(t.lexeme ORDER BY t.bound DESC, t.lexeme), array_agg(t.weight ORDER BY t.bound DESC, t.lexeme),
           array_agg(t.bound ORDER BY t.bound DESC, t.lexeme), array_agg(t.df ORDER BY t.bound DESC, t.lexeme)
    INTO lexemes, weights, bounds, dfs
    FROM ragline_bm25_terms(p_collection, p_lexemes, p_k1, p_b) AS t;
    IF lexemes IS NULL OR p_k < 1 THEN
        RETURN;
    END IF;
    terms := array_length(lexemes, 1);
    seed_postings := dfs[1];
    WHILE seed < terms AND seed_postings + dfs[seed + 1] <= 20000 LOOP
        seed := seed + 1;
        seed_postings := seed_postings + dfs[seed];
    END LOOP;
    SELECT CASE WHEN count(*) >= p_k THEN min(best.score) ELSE 0 END INTO theta
    FROM (
        SELECT sum(w.weight * p.tf / (p.tf + k1_b + k1_b_avgdl * p.dl)) AS score
        FROM unnest(lexemes, weights) AS w(lexeme, weight)
        JOIN chunk_terms AS p ON p.collection_id = p_collection AND p.lexeme = w.lexeme
            AND p.chunk_id = ANY (ARRAY(
                SELECT s.chunk_id FROM chunk_terms AS s
                JOIN unnest(lexemes[1:seed], weights[1:seed]) AS sw(lexeme, weight)
                    ON s.collection_id = p_collection AND s.lexeme = sw.lexeme
                GROUP BY s.chunk_id
                ORDER BY sum(sw.weight * s.tf / (s.tf + k1_b + k1_b_avgdl * s.dl)) DESC
                LIMIT p_k * 4))
        GROUP BY p.chunk_id
        ORDER BY 1 DESC
        LIMIT p_k
    ) AS best;
    theta := theta * (1 - 1e-9);
    essential := terms;
    SELECT sum(d) INTO essential_postings FROM unnest(dfs) AS d;
    WHILE essential > 1 AND (rest + bounds[essential] < theta OR essential_postings > p_max_postings) LOOP
        rest := rest + bounds[essential];
        essential_postings := essential_postings - dfs[essential];
        essential := essential - 1;
    END LOOP;
    RETURN QUERY
    WITH partial AS MATERIALIZED (
        SELECT p.chunk_id, sum(w.weight * p.tf / (p.tf + k1_b + k1_b_avgdl * p.dl)) AS score
        FROM unnest(lexemes[1:essential], weights[1:essential]) AS w(lexeme, weight)
        JOIN chunk_terms AS p ON p.collection_id = p_collection AND p.lexeme = w.lexeme
        GROUP BY p.chunk_id
        HAVING sum(w.weight * p.tf / (p.tf + k1_b + k1_b_avgdl * p.dl)) + rest >= theta
    ),
    rest_scores AS (
        SELECT p.chunk_id, sum(w.weight * p.tf / (p.tf + k1_b + k1_b_avgdl * p.dl)) AS score
        FROM unnest(lexemes[essential + 1:], weights[essential + 1:]) AS w(lexeme, weight)
        JOIN chunk_terms AS p ON p.collection_id = p_collection AND p.lexeme = w.lexeme
        WHERE p.chunk_id IN (SELECT partial.chunk_id FROM partial)
        GROUP BY p.chunk_id
    )
    SELECT c.chunk_id, c.score + coalesce(r.score, 0) AS score
    FROM partial AS c LEFT JOIN rest_scores AS r ON r.chunk_id = c.chunk_id
    ORDER BY 2 DESC, 1
    LIMIT p_k;
END $$;
