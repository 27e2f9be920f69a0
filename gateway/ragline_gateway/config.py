"""The gateway's settings, read from environment variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from ragline.channels import MAX_MESSAGE_BYTES
from ragline.config import ConfigError, setting
from ragline.validation import MAX_BATCH_DOCUMENTS, MAX_QUERY_CHARS

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9101


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway's dependencies are and how it chunks, searches and answers."""

    embedder_addr: str = setting("EMBEDDER_ADDR", "127.0.0.1:50052")
    """host:port of the embedder service."""
    retriever_addr: str = setting("RETRIEVER_ADDR", "127.0.0.1:50053")
    """host:port of the retriever service."""
    generator_addr: str = setting("GENERATOR_ADDR", "127.0.0.1:50054")
    """host:port of the generator service."""
    redis_url: str | None = setting("REDIS_URL", None)
    """Redis URL, e.g. redis://cache:6379/0; unset starts an embedded Valkey server."""
    default_collection: str = setting("GATEWAY_DEFAULT_COLLECTION", "default")
    """Collection used when a request names none."""
    chunk_tokens: int = setting("GATEWAY_CHUNK_TOKENS", 200, minimum=16, maximum=8192)
    """Target chunk size in cl100k_base tokens; keep it under the embedder's input limit."""
    chunk_overlap_tokens: int = setting("GATEWAY_CHUNK_OVERLAP_TOKENS", 30, minimum=0)
    """Tokens repeated between neighbouring chunks, so a fact split by a boundary is found whole."""
    top_k: int = setting("GATEWAY_TOP_K", 5, minimum=1, maximum=50)
    """Passages given to the generator when a request does not say."""
    candidates: int = setting("GATEWAY_CANDIDATES", 20, minimum=1, maximum=200)
    """Candidates retrieved before reranking down to top_k (when a reranker is configured)."""
    rerank: bool = setting("GATEWAY_RERANK", True)
    """Rerank candidates when the embedder has a reranker; false skips the stage."""
    cache_embedding_ttl_seconds: int = setting("GATEWAY_CACHE_EMBEDDING_TTL_SECONDS", 86400, minimum=0)
    """How long a query embedding stays cached; 0 disables the layer."""
    cache_retrieval_ttl_seconds: int = setting("GATEWAY_CACHE_RETRIEVAL_TTL_SECONDS", 3600, minimum=0)
    """How long retrieval results stay cached; 0 disables the layer."""
    cache_answer_ttl_seconds: int = setting("GATEWAY_CACHE_ANSWER_TTL_SECONDS", 3600, minimum=0)
    """How long answers stay cached, for the exact and the semantic layer; 0 disables both."""
    semantic_cache_distance: float = setting("GATEWAY_SEMANTIC_CACHE_DISTANCE", 0.08, minimum=0, maximum=1)
    """Largest cosine distance between two questions' embeddings for one to be served the other's answer."""
    semantic_cache_entries: int = setting("GATEWAY_SEMANTIC_CACHE_ENTRIES", 512, minimum=1, maximum=100000)
    """Past questions kept per collection generation for the semantic cache (newest first)."""
    embed_batch_size: int = setting("GATEWAY_EMBED_BATCH_SIZE", 64, minimum=1, maximum=256)
    """Chunks sent to the embedder per call during ingestion."""
    max_document_bytes: int = setting("GATEWAY_MAX_DOCUMENT_BYTES", 10 * 1024 * 1024, minimum=1)
    """Largest document accepted, in bytes."""
    max_request_bytes: int = setting(
        "GATEWAY_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1, maximum=MAX_MESSAGE_BYTES
    )
    """Largest total content of the documents of one IngestDocuments or CreateIngestJob request, in bytes."""
    max_ingest_documents: int = setting(
        "GATEWAY_MAX_INGEST_DOCUMENTS", MAX_BATCH_DOCUMENTS, minimum=1, maximum=MAX_BATCH_DOCUMENTS
    )
    """Most documents (JSON Lines records counted one by one) one synchronous IngestDocuments request may
    hold, at most the retriever's one-transaction limit; larger sets go through an ingest job."""
    max_query_chars: int = setting("GATEWAY_MAX_QUERY_CHARS", 8192, minimum=1, maximum=MAX_QUERY_CHARS)
    """Longest query text of Search, Ask and AskStream, in characters; the retriever's own limit caps it."""
    embed_timeout_seconds: float = setting("GATEWAY_EMBED_TIMEOUT_SECONDS", 30.0, minimum=0.01)
    """Longest wait for one embedder call (less if the caller's deadline is nearer)."""
    retrieve_timeout_seconds: float = setting("GATEWAY_RETRIEVE_TIMEOUT_SECONDS", 30.0, minimum=0.01)
    """Longest wait for one retriever call (less if the caller's deadline is nearer)."""
    generate_timeout_seconds: float = setting("GATEWAY_GENERATE_TIMEOUT_SECONDS", 120.0, minimum=0.01)
    """Longest wait for the generator (less if the caller's deadline is nearer)."""
    ingest_workers: int = setting("GATEWAY_INGEST_WORKERS", 4, minimum=0, maximum=64)
    """Concurrent ingest job workers in this process. Each works on one claimed batch at a time, so
    while one waits for the embedder the others decode, chunk and store; 0 leaves the queue to other replicas."""
    ingest_claim_documents: int = setting("GATEWAY_INGEST_CLAIM_DOCUMENTS", 16, minimum=1, maximum=1000)
    """Job documents one worker claims at a time; their new chunks go to the embedder together."""
    ingest_lease_seconds: float = setting("GATEWAY_INGEST_LEASE_SECONDS", 120.0, minimum=1.0, maximum=3600.0)
    """How long a claimed document stays with its worker; after a crash, others take it over once this runs out."""
    ingest_max_attempts: int = setting("GATEWAY_INGEST_MAX_ATTEMPTS", 5, minimum=1, maximum=100)
    """Attempts (including ones whose worker died) before a job document is marked failed for good."""
    ingest_retry_seconds: float = setting("GATEWAY_INGEST_RETRY_SECONDS", 2.0, minimum=0.0, maximum=3600.0)
    """Delay before a failed job document's first retry; it doubles with each attempt, with jitter, up to 10 minutes."""
    ingest_poll_seconds: float = setting("GATEWAY_INGEST_POLL_SECONDS", 1.0, minimum=0.05, maximum=60.0)
    """How often an idle worker looks for queued documents (jobs created through this replica wake it at once)."""

    def __post_init__(self) -> None:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ConfigError(
                f"GATEWAY_CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be smaller than "
                f"GATEWAY_CHUNK_TOKENS ({self.chunk_tokens})"
            )
