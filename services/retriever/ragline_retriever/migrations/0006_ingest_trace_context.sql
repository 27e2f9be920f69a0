-- The W3C traceparent of the request that recorded an ingest job: the workers that store its documents
-- later, in other processes, link their spans to that request's trace. Empty when it was not traced.

ALTER TABLE ingest_jobs ADD COLUMN trace_parent text NOT NULL DEFAULT '';
