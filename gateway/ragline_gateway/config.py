"""The gateway's settings, read from environment variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from ragline.config import ConfigError, setting


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway's dependencies are and how it chunks, searches and answers."""

    embedder_addr: str = setting("EMBEDDER_ADDR", "127.0.0.1:50052", "host:port of the embedder service.")
    """host:port of the embedder service."""
    retriever_addr: str = setting("RETRIEVER_ADDR", "127.0.0.1:50053", "host:port of the retriever service.")
    """host:port of the retriever service."""
    generator_addr: str = setting("GENERATOR_ADDR", "127.0.0.1:50054", "host:port of the generator service.")
    """host:port of the generator service."""
    redis_url: str | None = setting(
        "REDIS_URL", None, "Redis URL; unset starts an embedded Valkey server on a private port."
    )
    """Redis URL, e.g. redis://cache:6379/0; unset starts an embedded Valkey server."""
    default_collection: str = setting(
        "GATEWAY_DEFAULT_COLLECTION", "default", "Collection used when a request names none."
    )
    """Collection used when a request names none."""
    chunk_tokens: int = setting(
        "GATEWAY_CHUNK_TOKENS", 200, "Target chunk size in cl100k_base tokens.", minimum=16, maximum=8192
    )
    """Target chunk size in cl100k_base tokens; keep it under the embedder's input limit."""
    chunk_overlap_tokens: int = setting(
        "GATEWAY_CHUNK_OVERLAP_TOKENS", 30, "Tokens repeated between neighbouring chunks.", minimum=0
    )
    """Tokens repeated between neighbouring chunks, so a fact split by a boundary is found whole."""
    top_k: int = setting(
        "GATEWAY_TOP_K", 5, "Passages given to the generator by default.", minimum=1, maximum=50
    )
    """Passages given to the generator when a request does not say."""
    embed_batch_size: int = setting(
        "GATEWAY_EMBED_BATCH_SIZE", 64, "Chunks sent to the embedder per call.", minimum=1, maximum=256
    )
    """Chunks sent to the embedder per call during ingestion."""
    max_document_bytes: int = setting(
        "GATEWAY_MAX_DOCUMENT_BYTES", 10 * 1024 * 1024, "Largest document accepted, in bytes.", minimum=1
    )
    """Largest document accepted, in bytes."""
    embed_timeout_seconds: float = setting(
        "GATEWAY_EMBED_TIMEOUT_SECONDS", 30.0, "Longest wait for one embedder call.", minimum=0.01
    )
    """Longest wait for one embedder call (less if the caller's deadline is nearer)."""
    retrieve_timeout_seconds: float = setting(
        "GATEWAY_RETRIEVE_TIMEOUT_SECONDS", 30.0, "Longest wait for one retriever call.", minimum=0.01
    )
    """Longest wait for one retriever call (less if the caller's deadline is nearer)."""
    generate_timeout_seconds: float = setting(
        "GATEWAY_GENERATE_TIMEOUT_SECONDS", 120.0, "Longest wait for the generator.", minimum=0.01
    )
    """Longest wait for the generator (less if the caller's deadline is nearer)."""

    def __post_init__(self) -> None:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ConfigError(
                f"GATEWAY_CHUNK_OVERLAP_TOKENS ({self.chunk_overlap_tokens}) must be smaller than "
                f"GATEWAY_CHUNK_TOKENS ({self.chunk_tokens})"
            )
