-- Moving a collection to another embedding model while it keeps serving (issue #19).
--
-- A migration re-embeds the collection's documents into a *target* collection: a second row of
-- `collections` with the new model, its own HNSW index, BM25 postings and statistics, filled by
-- the documents of an ingest job (durable, resumable, its progress in `ragline jobs`). The target
-- is named '~migration~<source id>', a name no caller can send ('~' is not allowed), and is
-- never listed. When the job has stored every document and, under a lock on the source that
-- holds writers back, nothing differs between the two, one transaction gives the target the
-- source's name and retires the source; searches go from the old vectors to the new ones at
-- that commit. Cancelling deletes the target, leaving the source as it was.

CREATE TABLE collection_migrations (
    -- The ingest job whose documents are the source's, stored into the target.
    job_id uuid PRIMARY KEY REFERENCES ingest_jobs (id) ON DELETE CASCADE,
    -- One migration at a time per collection.
    source_id bigint NOT NULL UNIQUE REFERENCES collections (id) ON DELETE CASCADE,
    target_id bigint NOT NULL UNIQUE REFERENCES collections (id) ON DELETE CASCADE,
    -- Catch-up rounds so far: documents written to the source while the job ran are copied again.
    rounds integer NOT NULL DEFAULT 1
);

-- What a migration job does, kept on the job (after the switch its migration row is gone, and
-- `ragline jobs` still says what the job did). NULL for jobs that ingest uploaded documents. A
-- migration job is finished by its switch (or cancellation), never by its counts alone: a
-- catch-up round may still add documents to it.
ALTER TABLE ingest_jobs ADD COLUMN migration_source_model text;
ALTER TABLE ingest_jobs ADD COLUMN migration_target_model text;
ALTER TABLE ingest_jobs ADD COLUMN migration_target_dimension integer;
