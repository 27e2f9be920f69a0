"""The gateway's settings, read from environment variables at start."""

from __future__ import annotations

from dataclasses import dataclass

from ragline.channels import MAX_MESSAGE_BYTES
from ragline.config import ConfigError, setting
from ragline.validation import MAX_BATCH_DOCUMENTS, MAX_QUERY_CHARS

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9101
# The JWT signature algorithms that may be configured: asymmetric only, so that a public key from the
# JWKS can never be used as an HMAC secret, and never `none`.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway's dependencies are and how it chunks, searches and answers."""

    embedder_addr: str = setting("EMBEDDER_ADDR", "127.0.0.1:50052")
    """gRPC target of the embedder replicas: host:port, an `ipv4:` list or `dns:///` name (see ragline.channels)."""
    more_embedder_addrs: str = setting("MORE_EMBEDDER_ADDRS", "")
    """gRPC targets of embedders that serve other models than EMBEDDER_ADDR's, separated by spaces
    (each may be an `ipv4:` list): a collection of one of their models is searched and ingested
    through it, and collections can be migrated to their models (`ragline collections migrate`)."""
    retriever_addr: str = setting("RETRIEVER_ADDR", "127.0.0.1:50053")
    """gRPC target of the retriever replicas: host:port, an `ipv4:` list or `dns:///` name (see ragline.channels)."""
    generator_addr: str = setting("GENERATOR_ADDR", "127.0.0.1:50054")
    """gRPC target of the generator replicas: host:port, an `ipv4:` list or `dns:///` name (see ragline.channels)."""
    redis_url: str | None = setting("REDIS_URL", None)
    """Redis URL, e.g. redis://cache:6379/0; unset starts an embedded Valkey server."""
    default_collection: str = setting("GATEWAY_DEFAULT_COLLECTION", "default")
    """Collection used when a request names none."""
    chunk_tokens: int = setting("GATEWAY_CHUNK_TOKENS", 512, minimum=16, maximum=8192)
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
    answer_mode: str = setting("GATEWAY_ANSWER_MODE", "auto", choices=("generative", "extractive", "auto"))
    """How Ask answers when a request leaves `options.answer_mode` unspecified (chosen on `make eval-answers`)."""
    not_found_threshold: float = setting("GATEWAY_NOT_FOUND_THRESHOLD", 0.35, minimum=-1, maximum=1)
    """Below this best cosine between the question and the passages' sentences, Ask answers "not found"
    without calling the model (calibrated on `make eval-answers`); -1 never refuses."""
    auto_extractive_threshold: float = setting(
        "GATEWAY_AUTO_EXTRACTIVE_THRESHOLD", 0.0, minimum=-1, maximum=1
    )
    """In auto mode, a best sentence at least this similar to the question is the answer; below it the model writes one."""
    not_found_answer: str = setting("GATEWAY_NOT_FOUND_ANSWER", "Not found in the documents.")
    """The answer when no passage is relevant enough."""
    auth: str = setting("GATEWAY_AUTH", "on", choices=("on", "off"))
    """on: every public call needs an API key or a JWT (health and reflection stay open); off: every call is
    made by an admin of the `default` tenant, for a trusted network only."""
    api_key_cache_seconds: float = setting("GATEWAY_API_KEY_CACHE_SECONDS", 5.0, minimum=0, maximum=3600)
    """How long a verified API key's record is used without asking the retriever again: a key revoked through
    another replica is refused here within this time; 0 looks every key up on every call."""
    jwt_jwks_file: str | None = setting("GATEWAY_JWT_JWKS_FILE", None)
    """Path of a JSON Web Key Set file whose keys sign the JWTs callers may present; re-read when a token names
    a key id it does not hold. Setting it (or GATEWAY_JWT_JWKS_URL) turns JWT authentication on."""
    jwt_jwks_url: str | None = setting("GATEWAY_JWT_JWKS_URL", None)
    """http(s) URL of the identity provider's JSON Web Key Set; fetched off the event loop, kept for
    GATEWAY_JWT_JWKS_CACHE_SECONDS, and fetched again when a token names an unknown key id."""
    jwt_issuer: str | None = setting("GATEWAY_JWT_ISSUER", None)
    """The `iss` every accepted JWT must carry; required when a JWKS is configured."""
    jwt_audience: str | None = setting("GATEWAY_JWT_AUDIENCE", None)
    """The `aud` every accepted JWT must include; required when a JWKS is configured."""
    jwt_algorithms: str = setting("GATEWAY_JWT_ALGORITHMS", "RS256,ES256")
    """Comma-separated signature algorithms accepted; asymmetric only (RS*, PS*, ES*, EdDSA), never none or HS*."""
    jwt_leeway_seconds: float = setting("GATEWAY_JWT_LEEWAY_SECONDS", 30.0, minimum=0, maximum=600)
    """Clock skew tolerated when checking a JWT's `exp`, `nbf` and `iat`."""
    jwt_tenant_claim: str = setting("GATEWAY_JWT_TENANT_CLAIM", "tenant")
    """The claim naming the caller's tenant (a dotted path such as `ext.tenant` reaches into an object)."""
    jwt_role_claim: str = setting("GATEWAY_JWT_ROLE_CLAIM", "role")
    """The claim giving the caller's role: reader, writer or admin, or a list of which the highest counts."""
    jwt_jwks_cache_seconds: float = setting("GATEWAY_JWT_JWKS_CACHE_SECONDS", 300.0, minimum=1, maximum=86400)
    """How long a JWKS fetched from GATEWAY_JWT_JWKS_URL is used before it is fetched again."""
    jwt_jwks_timeout_seconds: float = setting(
        "GATEWAY_JWT_JWKS_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=60
    )
    """Longest wait for the identity provider to answer one JWKS fetch."""
    rate_limit_query_per_second: float = setting("GATEWAY_RATE_LIMIT_QUERY_PER_SECOND", 0.0, minimum=0)
    """Search, Ask and AskStream calls per second one credential may make; 0 means no limit."""
    rate_limit_read_per_second: float = setting("GATEWAY_RATE_LIMIT_READ_PER_SECOND", 0.0, minimum=0)
    """Document and ingest job reads per second one credential may make; 0 means no limit."""
    rate_limit_write_per_second: float = setting("GATEWAY_RATE_LIMIT_WRITE_PER_SECOND", 0.0, minimum=0)
    """Ingest, delete and cancel calls per second one credential may make; 0 means no limit."""
    rate_limit_admin_per_second: float = setting("GATEWAY_RATE_LIMIT_ADMIN_PER_SECOND", 0.0, minimum=0)
    """Key and collection management calls per second one credential may make; 0 means no limit."""
    rate_limit_burst_seconds: float = setting(
        "GATEWAY_RATE_LIMIT_BURST_SECONDS", 2.0, minimum=0, maximum=3600
    )
    """How many seconds' worth of calls a credential that was idle may make at once (at least one call)."""
    rate_limit_ingest_bytes_per_minute: int = setting(
        "GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE", 0, minimum=0
    )
    """Document content bytes one credential may send to IngestDocuments, CreateIngestJob and
    UploadIngestDocuments per minute (up to a minute's worth at once); 0 means no limit."""
    ask_concurrency_per_tenant: int = setting(
        "GATEWAY_ASK_CONCURRENCY_PER_TENANT", 0, minimum=0, maximum=10000
    )
    """Ask and AskStream calls one tenant may have in progress at once, across every replica; 0 means no limit."""
    ask_lease_seconds: float = setting("GATEWAY_ASK_LEASE_SECONDS", 30.0, minimum=1, maximum=3600)
    """How long an Ask's concurrency slot is held in Redis between renewals; a crashed gateway's slots free
    themselves after this long."""
    conversation_history_turns: int = setting("GATEWAY_CONVERSATION_HISTORY_TURNS", 6, minimum=1, maximum=100)
    """The earlier turns of a conversation an Ask reads: the follow-up's rewrite and the prompt use the
    latest of them that fit their token budgets."""
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
        self._check_jwt()

    def jwt_algorithm_names(self) -> list[str]:
        """GATEWAY_JWT_ALGORITHMS as a list."""
        return [name.strip() for name in self.jwt_algorithms.split(",") if name.strip()]

    def _check_jwt(self) -> None:
        if self.jwt_jwks_file and self.jwt_jwks_url:
            raise ConfigError("set GATEWAY_JWT_JWKS_FILE or GATEWAY_JWT_JWKS_URL, not both")
        if self.jwt_jwks_url and not self.jwt_jwks_url.startswith(("https://", "http://")):
            raise ConfigError(
                f"GATEWAY_JWT_JWKS_URL={self.jwt_jwks_url!r}: must be an https:// (or http://) URL"
            )
        wrong = [name for name in self.jwt_algorithm_names() if name not in JWT_ALGORITHMS]
        if wrong or not self.jwt_algorithm_names():
            raise ConfigError(
                f"GATEWAY_JWT_ALGORITHMS={self.jwt_algorithms!r}: must be a comma-separated list of "
                f"{', '.join(JWT_ALGORITHMS)} (asymmetric algorithms only)"
            )
        configured = bool(self.jwt_jwks_file or self.jwt_jwks_url)
        for name, value in (
            ("GATEWAY_JWT_ISSUER", self.jwt_issuer),
            ("GATEWAY_JWT_AUDIENCE", self.jwt_audience),
        ):
            if configured and not value:
                raise ConfigError(
                    f"{name} is required when a JWKS is configured (GATEWAY_JWT_JWKS_FILE or _URL)"
                )
            if value and not configured:
                raise ConfigError(
                    f"{name} is set but no JWKS is: set GATEWAY_JWT_JWKS_FILE or GATEWAY_JWT_JWKS_URL to turn "
                    "JWT authentication on"
                )
