"""The local model on torch: a sentence-transformers model run in-process, the `EMBEDDER_LOCAL_RUNTIME=torch` choice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ragline_embedder.backends import Prefixes, forward_passes, threads_available
from ragline_embedder.config import BATCH_TOKENS, EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class TorchBackend:
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
    def load(cls, config: EmbedderConfig, model_path: Path, model_name: str) -> TorchBackend:
        """Loads the model from disk (seconds); offline loading must be prepared before."""
        import torch
        from sentence_transformers import SentenceTransformer

        # Counting tokens of a text over the limit is expected here; transformers would warn on each.
        logging.getLogger("transformers").setLevel(logging.ERROR)
        torch.set_num_threads(threads_available(config.threads))
        model = SentenceTransformer(str(model_path), device="cpu")
        return cls(
            model, model_name, Prefixes.from_config(config), config.batch_size, config.model_batch_tokens()
        )

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
