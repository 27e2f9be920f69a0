"""Text for `bench_scale`: real Cranfield text, repeated with variation, one chunk per synthetic vector.

Each chunk is the Cranfield passage its vector was synthesised from (`retriever_vectors`: a
title or first sentence), followed by one sentence of a random Cranfield abstract with a tenth of
its words dropped at random. The vocabulary and term frequencies stay those of real technical
text, the chunks are not verbatim copies of each other (so BM25 ranks them, rather than tying
hundreds of clones), and a chunk is about as long as a short paragraph (25 lexemes on average).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

DROPOUT = 0.1


def _sentences(cranfield: Path) -> list[list[str]]:
    """Every sentence of every Cranfield abstract, as words."""
    sentences = []
    for line in (cranfield / "corpus.jsonl").read_text().splitlines():
        for sentence in re.split(r" \. ", json.loads(line)["text"]):
            words = sentence.split()
            if len(words) >= 4:
                sentences.append(words)
    return sentences


def chunk_texts(cranfield: Path, passages: list[str], origin: NDArray[np.int64], seed: int = 1) -> list[str]:
    """One text per entry of `origin` (an index into `passages`), varied as the module says."""
    sentences = _sentences(cranfield)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), len(origin))
    # A pool of dropout masks, reused: drawing one per word of a million chunks costs more than the load.
    masks = rng.random((4096, max(map(len, sentences)))) >= DROPOUT
    mask_picks = rng.integers(0, len(masks), len(origin))
    texts = []
    for i, start in enumerate(origin.tolist()):
        words = sentences[picks[i]]
        mask = masks[mask_picks[i]]
        kept = " ".join(word for word, keep in zip(words, mask, strict=False) if keep)
        texts.append(f"{passages[start]} {kept} .")
    return texts
