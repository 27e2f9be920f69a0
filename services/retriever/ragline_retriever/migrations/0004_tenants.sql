-- Tenants: every collection and every ingest job belongs to one tenant, and every statement that
-- names a collection or a job names its tenant too, so a caller never reaches another tenant's
-- data, even through a bug of the gateway's. Data from before tenants belongs to 'default'.
--
-- Documents and chunks belong to their collection's tenant through `collection_id`. Collection
-- ids are never reused and a collection never changes tenant, so the per-collection HNSW
-- indexes (named by id) never collide between two tenants' collections of the same name.

-- A constant default fills the existing rows without rewriting the table; it is dropped so that
-- every new row must name its tenant.
ALTER TABLE collections ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE collections ALTER COLUMN tenant DROP DEFAULT;
-- Names are unique within a tenant; this index also serves lookups by (tenant, name) and each
-- tenant's listing by name.
ALTER TABLE collections DROP CONSTRAINT collections_name_key;
ALTER TABLE collections ADD CONSTRAINT collections_tenant_name_key UNIQUE (tenant, name);

-- Directly on the job, not through its collection: a job names its collection by name and
-- outlives it (a deleted collection fails the job's documents), so there is no row to join.
ALTER TABLE ingest_jobs ADD COLUMN tenant text COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE ingest_jobs ALTER COLUMN tenant DROP DEFAULT;
-- A tenant's jobs newest first, of all its collections or of one.
DROP INDEX ingest_jobs_listing;
CREATE INDEX ingest_jobs_listing ON ingest_jobs (tenant, created_at DESC, id DESC);
CREATE INDEX ingest_jobs_collection_listing ON ingest_jobs (tenant, collection, created_at DESC, id DESC);
