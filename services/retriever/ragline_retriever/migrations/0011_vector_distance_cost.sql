-- Tell the planner what a vector distance costs in a sequential scan, so that a small collection's
-- search uses its HNSW index instead of reading every chunk.
--
-- pgvector declares its functions with the default COST 1, as cheap as an integer comparison. In a
-- sequential scan, each chunk's `embedding` is detoasted, cast to halfvec and compared with the
-- query vector: about 5 us per chunk on Cranfield (a 9.4 ms scan of 1,439 chunks), 5 cost units at
-- this machine's ~1 us per unit. The index scan for the same top 40 takes 0.4 ms. With
-- `hnsw.ef_search` 100 (RETRIEVER_HNSW_EF_SEARCH) the index's estimated start-up cost exceeded the
-- scan's on a collection of Cranfield's size, so it was searched by a scan: the hybrid statement took
-- 10.6 ms at p50 instead of 3.7 ms with the index (the same 300 queries, side by side). COST 1000 on
-- the cast and on the distance (2 x 1000 x cpu_operator_cost 0.0025 = 5 units per chunk) states the
-- measured cost. Only plans
-- that evaluate these functions per row change: a filtered search still scans when the filter
-- leaves few chunks, because the distance is computed only for the chunks that pass it.
--
-- These functions belong to the vector extension. A role that does not own them (a managed server
-- where a superuser created the extension) cannot alter them: the migration then leaves them as
-- they are and says so, and searches stay correct but small collections stay slower. pg_dump does
-- not dump an extension's functions, so a database restored from a dump needs these two statements
-- run again by the extension's owner.
DO $$
BEGIN
    ALTER FUNCTION vector_to_halfvec(vector, integer, boolean) COST 1000;
    ALTER FUNCTION cosine_distance(halfvec, halfvec) COST 1000;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'ragline: could not set the cost of pgvector''s distance functions (%); '
        'small collections will be searched without their HNSW index. Have the extension''s owner run '
        'ALTER FUNCTION vector_to_halfvec(vector, integer, boolean) COST 1000; '
        'ALTER FUNCTION cosine_distance(halfvec, halfvec) COST 1000;', SQLERRM;
END $$;
