-- Packed posting blocks, kept by the BM25 fold, so that the retriever scores keyword queries itself.
--
-- Scoring a posting in SQL costs about 3 us (an executor row, hash aggregation, float arithmetic),
-- and a Cranfield query at 1,000,000 chunks keeps 100,000+ postings after MaxScore pruning: 300 ms.
-- The retriever now runs MaxScore in its own process (`bm25_top_k.py`, numpy), reading postings
-- packed: one row per collection, term and block of 4,096 chunk ids (chunk_id >> 12), holding the
-- block's chunk ids (int8), term frequencies and chunk lengths (int4) as big-endian arrays in bytea.
--
-- `chunk_terms` stays the source of truth, kept by the write path's triggers in the writer's
-- transaction. Block rows are derived from it by the fold, which already reads every statistics
-- delta row: each delta row now names the block of the postings it counts, and the fold rebuilds
-- the block rows of the (collection, term, block) triples whose deltas it folds. A search reads a
-- block row only if no delta row of its triple is visible in the search's snapshot, and reads the
-- triples that have one from `chunk_terms` (`ragline_bm25_postings`). That is exact in any snapshot:
-- a change committed before the fold's rebuild is in the block row, and a change whose delta the
-- fold did not delete still has its delta row, which sends searches to `chunk_terms`.

-- Deltas left now have no block: fold them first, with writers and other folds held off.
SELECT pg_advisory_xact_lock(7450625812580609);
LOCK TABLE chunks IN SHARE MODE;
SELECT ragline_bm25_fold();
ALTER TABLE bm25_term_deltas ADD COLUMN block bigint NOT NULL;
DROP INDEX bm25_term_deltas_idx;
CREATE INDEX bm25_term_deltas_idx ON bm25_term_deltas (collection_id, lexeme, block);

CREATE TABLE bm25_blocks (
    collection_id bigint NOT NULL,
    lexeme text COLLATE "C" NOT NULL,
    block bigint NOT NULL,
    chunk_ids bytea NOT NULL,
    tfs bytea NOT NULL,
    dls bytea NOT NULL,
    PRIMARY KEY (collection_id, lexeme, block)
);
-- Out of line but not compressed: searches read whole arrays, and pglz would cost them a decompression.
ALTER TABLE bm25_blocks ALTER COLUMN chunk_ids SET STORAGE EXTERNAL,
    ALTER COLUMN tfs SET STORAGE EXTERNAL, ALTER COLUMN dls SET STORAGE EXTERNAL;

-- The block row of each triple, packed from `chunk_terms`; no row for a triple without postings.
CREATE FUNCTION ragline_bm25_pack(p_collections bigint[], p_lexemes text[], p_blocks bigint[])
RETURNS TABLE (collection_id bigint, lexeme text, block bigint, chunk_ids bytea, tfs bytea, dls bytea)
LANGUAGE sql STABLE AS $$
    SELECT z.collection_id, z.lexeme, z.block,
           string_agg(int8send(p.chunk_id), ''::bytea ORDER BY p.chunk_id),
           string_agg(int4send(p.tf), ''::bytea ORDER BY p.chunk_id),
           string_agg(int4send(p.dl), ''::bytea ORDER BY p.chunk_id)
    FROM unnest(p_collections, p_lexemes, p_blocks) AS z(collection_id, lexeme, block)
    JOIN chunk_terms AS p ON p.collection_id = z.collection_id AND p.lexeme = z.lexeme
        AND p.chunk_id >= z.block << 12 AND p.chunk_id < (z.block + 1) << 12
    GROUP BY z.collection_id, z.lexeme, z.block
$$;

INSERT INTO bm25_blocks (collection_id, lexeme, block, chunk_ids, tfs, dls)
SELECT collection_id, lexeme, chunk_id >> 12,
       string_agg(int8send(chunk_id), ''::bytea ORDER BY chunk_id),
       string_agg(int4send(tf), ''::bytea ORDER BY chunk_id),
       string_agg(int4send(dl), ''::bytea ORDER BY chunk_id)
FROM chunk_terms GROUP BY collection_id, lexeme, chunk_id >> 12;

CREATE OR REPLACE FUNCTION ragline_bm25_stats_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, count(*), sum(term_count) FROM new_rows GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, block, df, max_tf, min_dl)
    SELECT n.collection_id, t.lexeme, n.id >> 12, count(*), max(coalesce(array_length(t.positions, 1), 1)),
           min(n.term_count)
    FROM new_rows AS n, unnest(n.tsv) AS t
    GROUP BY n.collection_id, t.lexeme, n.id >> 12;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ragline_bm25_stats_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, -count(*), -sum(term_count) FROM old_rows GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, block, df)
    SELECT o.collection_id, t.lexeme, o.id >> 12, -count(*) FROM old_rows AS o, unnest(o.tsv) AS t
    GROUP BY o.collection_id, t.lexeme, o.id >> 12;
    RETURN NULL;
END $$;

-- An update that keeps a term in a chunk still appends a delta row (df 0) for its block: the
-- term's tf or the chunk's length may have changed, so the block row must be packed again.
CREATE OR REPLACE FUNCTION ragline_bm25_stats_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bm25_collection_deltas (collection_id, chunks, total_length)
    SELECT collection_id, sum(chunks), sum(total_length) FROM (
        SELECT collection_id, 1 AS chunks, term_count AS total_length FROM new_rows
        UNION ALL
        SELECT collection_id, -1, -term_count FROM old_rows
    ) AS d GROUP BY collection_id;
    INSERT INTO bm25_term_deltas (collection_id, lexeme, block, df, max_tf, min_dl)
    SELECT collection_id, lexeme, block, sum(df), max(max_tf), min(min_dl) FROM (
        SELECT n.collection_id, t.lexeme, n.id >> 12 AS block, 1 AS df,
               coalesce(array_length(t.positions, 1), 1) AS max_tf, n.term_count AS min_dl
        FROM new_rows AS n, unnest(n.tsv) AS t
        UNION ALL
        SELECT o.collection_id, t.lexeme, o.id >> 12, -1, NULL, NULL FROM old_rows AS o, unnest(o.tsv) AS t
    ) AS d GROUP BY collection_id, lexeme, block;
    RETURN NULL;
END $$;

-- As in migration 0008, and it packs again the block rows of the triples it folds (see above).
CREATE OR REPLACE FUNCTION ragline_bm25_fold() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint := 0;
    terms bigint := 0;
    emptied bigint[];
    empty_collections bigint[];
    empty_lexemes text[];
    touched_collections bigint[];
    touched_lexemes text[];
    touched_blocks bigint[];
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
    touched AS (SELECT DISTINCT collection_id, lexeme, block FROM gone),
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
           (SELECT array_agg(lexeme ORDER BY collection_id, lexeme) FROM stored WHERE df = 0),
           (SELECT array_agg(collection_id) FROM touched),
           (SELECT array_agg(lexeme) FROM touched),
           (SELECT array_agg(block) FROM touched)
    INTO terms, empty_collections, empty_lexemes, touched_collections, touched_lexemes, touched_blocks;
    DELETE FROM bm25_term_stats AS t
    USING unnest(empty_collections, empty_lexemes) AS z(collection_id, lexeme)
    WHERE t.collection_id = z.collection_id AND t.lexeme = z.lexeme AND t.df = 0;
    DELETE FROM bm25_blocks AS b
    USING unnest(touched_collections, touched_lexemes, touched_blocks) AS z(collection_id, lexeme, block)
    WHERE b.collection_id = z.collection_id AND b.lexeme = z.lexeme AND b.block = z.block;
    INSERT INTO bm25_blocks (collection_id, lexeme, block, chunk_ids, tfs, dls)
    SELECT * FROM ragline_bm25_pack(touched_collections, touched_lexemes, touched_blocks);
    RETURN folded + terms;
END $$;

-- The postings of the terms `p_lexemes` in a collection, one row per term, each array in chunk id
-- order: block rows, and `chunk_terms` for the triples with deltas left (see above). With
-- `p_blocks`, only the postings of those blocks.
CREATE FUNCTION ragline_bm25_postings(p_collection bigint, p_lexemes text[], p_blocks bigint[] DEFAULT NULL)
RETURNS TABLE (lexeme text, chunk_ids bytea, tfs bytea, dls bytea)
LANGUAGE sql STABLE AS $$
    WITH pending AS MATERIALIZED (
        SELECT DISTINCT d.lexeme, d.block FROM bm25_term_deltas AS d
        WHERE d.collection_id = p_collection AND d.lexeme = ANY (p_lexemes)
            AND (p_blocks IS NULL OR d.block = ANY (p_blocks))
    ),
    blocks AS (
        SELECT b.lexeme, b.block, b.chunk_ids, b.tfs, b.dls FROM bm25_blocks AS b
        WHERE b.collection_id = p_collection AND b.lexeme = ANY (p_lexemes)
            AND (p_blocks IS NULL OR b.block = ANY (p_blocks))
            AND NOT EXISTS (SELECT FROM pending WHERE pending.lexeme = b.lexeme AND pending.block = b.block)
        UNION ALL
        SELECT p.lexeme, p.block, p.chunk_ids, p.tfs, p.dls
        FROM (
            SELECT array_agg(p_collection) AS collections, array_agg(lexeme) AS lexemes, array_agg(block) AS blocks
            FROM pending
        ) AS z,
        LATERAL ragline_bm25_pack(z.collections, z.lexemes, z.blocks) AS p
    )
    SELECT lexeme, string_agg(chunk_ids, ''::bytea ORDER BY block), string_agg(tfs, ''::bytea ORDER BY block),
           string_agg(dls, ''::bytea ORDER BY block)
    FROM blocks GROUP BY lexeme
$$;

-- Superseded by the retriever's MaxScore over block rows (`bm25_top_k.py`).
DROP FUNCTION ragline_bm25_top_k(bigint, text[], bigint, float8, float8, float8);
