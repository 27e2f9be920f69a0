"""The embedder's settings, read from `EMBEDDER_*` environment variables and validated at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragline.config import setting

DEFAULT_PORT = 50052
DEFAULT_METRICS_PORT = 9102


@dataclass(frozen=True)
class EmbedderConfig:
    """What model the embedder serves and how it batches the work."""

    backend: str = setting(
        "EMBEDDER_BACKEND", "local", "Where embeddings are computed.", choices=("local", "openai")
    )
    """`local` runs all-MiniLM-L6-v2 in-process on the CPU; `openai` calls the OpenAI API (not implemented yet)."""
    model_dir: Path | None = setting(  # noqa: RUF009 - setting() returns a dataclasses.field
        "EMBEDDER_MODEL_DIR", None, "Directory of a sentence-transformers model to serve instead."
    )
    """A local sentence-transformers model directory; unset serves the bundled all-MiniLM-L6-v2."""
    threads: int = setting(
        "EMBEDDER_THREADS", 0, "CPU threads the model uses; 0 means all CPUs available.", minimum=0
    )
    """Threads torch uses for the model; 0 means every CPU this process may run on."""
    batch_size: int = setting(
        "EMBEDDER_BATCH_SIZE", 32, "Texts passed to the model at once.", minimum=1, maximum=1024
    )
    """Texts passed to the model in one forward pass; a request's texts are split into batches this big."""
    max_batch: int = setting(
        "EMBEDDER_MAX_BATCH", 256, "Most texts one Embed call may carry.", minimum=1, maximum=100_000
    )
    """Most texts one `Embed` request may carry; larger requests are rejected with INVALID_ARGUMENT."""
    query_prefix: str = setting(
        "EMBEDDER_QUERY_PREFIX", "", "Text put before every query (e.g. 'query: ' for E5 models)."
    )
    """Text put before every query, for models trained with an instruction prefix; empty for MiniLM."""
    passage_prefix: str = setting(
        "EMBEDDER_PASSAGE_PREFIX", "", "Text put before every passage (e.g. 'passage: ')."
    )
    """Text put before every passage, for models trained with an instruction prefix; empty for MiniLM."""
