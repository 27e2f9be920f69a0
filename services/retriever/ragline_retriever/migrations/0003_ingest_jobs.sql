-- Durable ingest jobs: every uploaded document waits here until a worker has stored it.
-- Workers lease documents with SELECT ... FOR UPDATE SKIP LOCKED; a lease that runs out
-- (its worker died) makes the document claimable again, so nothing is lost to a crash.

CREATE TABLE ingest_jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- By name, not id: the collection may be deleted while the job waits, which fails its documents.
    collection text COLLATE "C" NOT NULL,
    accepting_documents boolean NOT NULL DEFAULT false,
    total_documents bigint NOT NULL DEFAULT 0,
    done_documents bigint NOT NULL DEFAULT 0,
    skipped_documents bigint NOT NULL DEFAULT 0,
    failed_documents bigint NOT NULL DEFAULT 0,
    cancelled_documents bigint NOT NULL DEFAULT 0,
    written_chunks bigint NOT NULL DEFAULT 0,
    cancelled boolean NOT NULL DEFAULT false,
    status_message text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    finished_at timestamptz
);

-- Listing is newest first; the id breaks ties so pages never skip or repeat a job.
CREATE INDEX ingest_jobs_listing ON ingest_jobs (created_at DESC, id DESC);

CREATE TABLE ingest_job_documents (
    job_id uuid NOT NULL REFERENCES ingest_jobs (id) ON DELETE CASCADE,
    ordinal bigint NOT NULL,
    document_id text NOT NULL,
    media_type text NOT NULL DEFAULT '',
    metadata jsonb NOT NULL DEFAULT '{}',
    -- Dropped once the document is finished: the stored chunks are the durable copy then.
    content bytea,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'skipped', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claim_token uuid,
    lease_expires_at timestamptz,
    last_error text NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, ordinal)
);

-- The claim query's two sources: queued documents that are due, and leases that ran out.
CREATE INDEX ingest_job_documents_queued ON ingest_job_documents (available_at) WHERE state = 'queued';
CREATE INDEX ingest_job_documents_leased ON ingest_job_documents (lease_expires_at) WHERE state = 'running';
-- A job's failures are listed with it.
CREATE INDEX ingest_job_documents_failed ON ingest_job_documents (job_id, ordinal) WHERE state = 'failed';
