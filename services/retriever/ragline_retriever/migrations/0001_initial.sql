-- Collections, their documents, and the documents' chunks with embeddings and full-text vectors.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE collections (
    id bigserial PRIMARY KEY,
    -- "C" collation: names sort by bytes, so keyset pagination (name > last) is stable everywhere.
    name text COLLATE "C" NOT NULL UNIQUE,
    embedding_model text NOT NULL,
    dimension integer NOT NULL CHECK (dimension BETWEEN 1 AND 4000),
    distance text NOT NULL DEFAULT 'cosine' CHECK (distance IN ('cosine')),
    -- Bumped by every change of the collection's content; caches key on it.
    generation bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    document_id text COLLATE "C" NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    content_hash text NOT NULL,
    chunk_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, document_id)
);

CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    document_id bigint NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    -- Repeated from the document so that each collection's partial HNSW index can filter on it.
    collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    ordinal integer NOT NULL CHECK (ordinal >= 0),
    text text NOT NULL,
    token_count integer NOT NULL DEFAULT 0,
    -- SHA-256 of the text: upserts keep unchanged chunks, and lookups by hash can skip re-embedding.
    content_hash text NOT NULL,
    -- No fixed dimension, so one table serves collections of any dimension; each collection's HNSW
    -- index casts to halfvec(its dimension), created by CreateCollection (halfvec indexes up to 4000).
    embedding vector NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (document_id, ordinal)
);

CREATE INDEX chunks_collection_hash_idx ON chunks (collection_id, content_hash);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);
