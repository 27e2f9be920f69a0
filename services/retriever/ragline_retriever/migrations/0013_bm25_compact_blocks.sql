-- Posting blocks in one compact column, returned as rows: a keyword search at 1,000,000 chunks spent
-- more time moving its postings than scoring them.
--
-- Migration 0012 kept each block's chunk ids (int8), term frequencies and chunk lengths (int4) in
-- three bytea columns, 16 bytes a posting, and `ragline_bm25_postings` joined a term's block rows
-- into one value with string_agg. At 1M chunks (`make bench-scale`, 50 Cranfield queries, about
-- 290,000 postings each) the block rows took 1.6 ms to read in the server, the function 5.8 ms,
-- and bringing its result into the retriever 13.8 ms. Now one column, `postings`, holds a block's
-- postings in chunk id order as 8-byte records, big-endian: the chunk id's offset in its block
-- (int2, below 4,096), the term frequency (int2: a tsvector keeps at most 256 positions per
-- lexeme) and the chunk's length (int4). The function returns the block rows themselves, and the
-- retriever decodes them as one numpy record array (`bm25_top_k.py`).
--
-- What a search reads is unchanged: a block row only where no delta of its triple is visible,
-- `chunk_terms` packed on the fly where one is (migration 0012). A retriever of an earlier version
-- cannot read the new rows (its keyword and hybrid searches fail once this has run, as with 0012):
-- replace every replica of the retriever together.

-- Folds are held off while the rows are packed again (the fold rebuilds rows of this table).
-- Writers go on: a triple they change has a delta row, so searches read it from `chunk_terms`.
SELECT pg_advisory_xact_lock(7450625812580609);

DROP FUNCTION ragline_bm25_postings(bigint, text[], bigint[]);
DROP FUNCTION ragline_bm25_pack(bigint[], text[], bigint[]);
DROP TABLE bm25_blocks;

CREATE TABLE bm25_blocks (
    collection_id bigint NOT NULL,
    lexeme text COLLATE "C" NOT NULL,
    block bigint NOT NULL,
    postings bytea NOT NULL,
    PRIMARY KEY (collection_id, lexeme, block)
);
-- Out of line but not compressed: searches read whole rows, and pglz would cost them a decompression.
ALTER TABLE bm25_blocks ALTER COLUMN postings SET STORAGE EXTERNAL;

-- One posting's record (see above); inlined by the planner, so it costs no call per posting.
CREATE FUNCTION ragline_bm25_posting(chunk_id bigint, tf integer, dl integer) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT int2send((chunk_id & 4095)::smallint) || int2send(tf::smallint) || int4send(dl)
$$;

-- The block row of each triple, packed from `chunk_terms`; no row for a triple without postings.
CREATE FUNCTION ragline_bm25_pack(p_collections bigint[], p_lexemes text[], p_blocks bigint[])
RETURNS TABLE (collection_id bigint, lexeme text, block bigint, postings bytea)
LANGUAGE sql STABLE AS $$
    SELECT z.collection_id, z.lexeme, z.block,
           string_agg(ragline_bm25_posting(p.chunk_id, p.tf, p.dl), ''::bytea ORDER BY p.chunk_id)
    FROM unnest(p_collections, p_lexemes, p_blocks) AS z(collection_id, lexeme, block)
    JOIN chunk_terms AS p ON p.collection_id = z.collection_id AND p.lexeme = z.lexeme
        AND p.chunk_id >= z.block << 12 AND p.chunk_id < (z.block + 1) << 12
    GROUP BY z.collection_id, z.lexeme, z.block
$$;

-- The block rows of the triples given, packed again (the fold's last step). A later change of the
-- rows' format replaces this function and `ragline_bm25_pack`, not the fold.
CREATE FUNCTION ragline_bm25_repack(p_collections bigint[], p_lexemes text[], p_blocks bigint[])
RETURNS void LANGUAGE sql AS $$
    DELETE FROM bm25_blocks AS b
    USING unnest(p_collections, p_lexemes, p_blocks) AS z(collection_id, lexeme, block)
    WHERE b.collection_id = z.collection_id AND b.lexeme = z.lexeme AND b.block = z.block;
    INSERT INTO bm25_blocks (collection_id, lexeme, block, postings)
    SELECT * FROM ragline_bm25_pack(p_collections, p_lexemes, p_blocks);
$$;

-- Every triple at once in one grouped scan of `chunk_terms` (the pack's join runs once per triple).
INSERT INTO bm25_blocks (collection_id, lexeme, block, postings)
SELECT collection_id, lexeme, chunk_id >> 12,
       string_agg(ragline_bm25_posting(chunk_id, tf, dl), ''::bytea ORDER BY chunk_id)
FROM chunk_terms GROUP BY collection_id, lexeme, chunk_id >> 12;

-- As in migration 0012, with the block rows packed again by `ragline_bm25_repack`.
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
    PERFORM ragline_bm25_repack(touched_collections, touched_lexemes, touched_blocks);
    RETURN folded + terms;
END $$;

-- The block rows of the terms `p_lexemes` in a collection (with `p_blocks`, of those blocks only),
-- by term and block: stored rows, and rows packed from `chunk_terms` for the triples with deltas
-- left (see migration 0012).
CREATE FUNCTION ragline_bm25_postings(p_collection bigint, p_lexemes text[], p_blocks bigint[] DEFAULT NULL)
RETURNS TABLE (lexeme text, block bigint, postings bytea)
LANGUAGE sql STABLE AS $$
    WITH pending AS MATERIALIZED (
        SELECT DISTINCT d.lexeme, d.block FROM bm25_term_deltas AS d
        WHERE d.collection_id = p_collection AND d.lexeme = ANY (p_lexemes)
            AND (p_blocks IS NULL OR d.block = ANY (p_blocks))
    )
    SELECT b.lexeme, b.block, b.postings FROM bm25_blocks AS b
    WHERE b.collection_id = p_collection AND b.lexeme = ANY (p_lexemes)
        AND (p_blocks IS NULL OR b.block = ANY (p_blocks))
        AND NOT EXISTS (SELECT FROM pending WHERE pending.lexeme = b.lexeme AND pending.block = b.block)
    UNION ALL
    SELECT p.lexeme, p.block, p.postings
    FROM (
        SELECT array_agg(p_collection) AS collections, array_agg(lexeme) AS lexemes, array_agg(block) AS blocks
        FROM pending
    ) AS z,
    LATERAL ragline_bm25_pack(z.collections, z.lexemes, z.blocks) AS p
    ORDER BY 1, 2
$$;
