"""Embeddings for the retriever benchmark: real ones of Cranfield text, multiplied into 100,000.

Uniformly random vectors are a pathological case for HNSW (no neighbourhoods, every point about
equally far from every other), so the benchmark's vectors keep the spread of real text
embeddings: about 2,800 short Cranfield passages (titles and first sentences) and the 225
queries are embedded once with the local all-MiniLM-L6-v2 and cached in bench-results/; each
synthetic vector is a real one moved part of the way towards a second real one plus a little
Gaussian noise scaled to the real vectors' per-dimension spread, then renormalised. Queries are
the real query embeddings, which were never mixed into the data.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.report import RESULTS_DIR

CACHE = RESULTS_DIR / "retriever_base_vectors.npz"


def _passages(cranfield: Path) -> tuple[list[str], list[str]]:
    passages = []
    for line in (cranfield / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        first_sentence = re.split(r" \. ", doc["text"], maxsplit=1)[0]
        passages += [t for t in (doc["title"], first_sentence) if t.strip()]
    queries = [json.loads(line)["text"] for line in (cranfield / "queries.jsonl").read_text().splitlines()]
    return passages, queries


def base_vectors(cranfield: Path) -> tuple[list[str], NDArray[np.float32], NDArray[np.float32]]:
    """The real passages, their embeddings and the query embeddings, computed once and cached."""
    passages, queries = _passages(cranfield)
    if CACHE.exists():
        cached = np.load(CACHE)
        if len(cached["passages"]) == len(passages):
            return passages, cached["passages"], cached["queries"]
    from ragline.config import load_config
    from ragline_embedder.config import EmbedderConfig
    from ragline_embedder.loader import load_local_backend

    backend = load_local_backend(load_config(EmbedderConfig))
    passage_vectors, query_vectors = backend.encode(passages), backend.encode(queries)
    RESULTS_DIR.mkdir(exist_ok=True)
    np.savez(CACHE, passages=passage_vectors, queries=query_vectors)
    return passages, passage_vectors, query_vectors


def synthesise(
    base: NDArray[np.float32], count: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """`count` unit vectors near the rows of `base`, and for each the row it started from."""
    rng = np.random.default_rng(seed)
    origin = rng.integers(0, len(base), count)
    partner = rng.integers(0, len(base), count)
    mix = rng.uniform(0.0, 0.35, (count, 1)).astype(np.float32)
    spread = base.std(axis=0, keepdims=True)
    noise = rng.standard_normal((count, base.shape[1])).astype(np.float32) * spread * 0.35
    vectors = (1 - mix) * base[origin] + mix * base[partner] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), origin
