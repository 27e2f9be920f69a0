"""`make eval`: retrieval quality on Cranfield, measured through the real running services.

Starts the embedder, retriever and gateway as processes (`ragline.devstack`, a fresh embedded
PostgreSQL and Redis in a temporary directory), ingests the 1,400 Cranfield abstracts through the
gateway's IngestDocuments (chunking, embedding, upsert), then ranks the 225 queries in each search
mode and scores the rankings with `ir-measures` (trec_eval semantics): nDCG@10, Recall@100 and
MRR@10, beside the reference figures of `../shared/data/README.md`.

Every ranking comes from the gateway's public Search (top 100, cache bypassed), so the quality
measured is the public API's. Abstracts are ingested whole
(GATEWAY_CHUNK_TOKENS=512, title and text), as in the reference runs; a document's rank is that
of its best chunk.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ir_measures
from ir_measures import RR, R, nDCG

from benchmarks import cranfield
from benchmarks.report import write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

COLLECTION = "cranfield"
DEPTH = 100
INGEST_BATCH = 20
MEASURES = [nDCG @ 10, R @ 100, RR @ 10]
MODES = {
    "keyword (BM25)": common_pb2.SEARCH_MODE_KEYWORD,
    "vector (MiniLM, HNSW)": common_pb2.SEARCH_MODE_VECTOR,
    "hybrid (RRF)": common_pb2.SEARCH_MODE_HYBRID,
}
# From ../shared/data/README.md and the issue: whole documents, exact search.
REFERENCES: list[dict[str, Any]] = [
    {"system": "reference: BM25 (bm25s)", "nDCG@10": 0.365, "Recall@100": 0.735, "MRR@10": 0.526},
    {"system": "reference: all-MiniLM-L6-v2 exact", "nDCG@10": 0.376, "Recall@100": 0.772, "MRR@10": 0.543},
    {"system": "reference: RRF of both (k=60)", "nDCG@10": 0.409, "Recall@100": 0.786, "MRR@10": 0.572},
    {"system": "reference: Haystack 2 hybrid on pgvector", "nDCG@10": 0.377},
]
TARGETS = {"keyword (BM25)": 0.36, "vector (MiniLM, HNSW)": 0.37, "hybrid (RRF)": 0.409}


def load_qrels(path: Path) -> list[ir_measures.Qrel]:
    """The graded judgments of a BEIR `qrels/test.tsv` (with its header line)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return [ir_measures.Qrel(query, doc, int(score)) for query, doc, score in rows]


def run_from_hits(query_id: str, document_ids: Iterable[str]) -> list[ir_measures.ScoredDoc]:
    """A query's ranking as scored documents, each document once at its best chunk's rank."""
    ranked = list(dict.fromkeys(document_ids))
    # Scores that decrease with rank, so trec_eval's sort by score keeps our order exactly.
    return [ir_measures.ScoredDoc(query_id, doc, float(len(ranked) - i)) for i, doc in enumerate(ranked)]


async def _evaluate(stack: Stack) -> dict[str, Any]:
    qrels = load_qrels(cranfield.shared_dir() / "data" / "cranfield" / "qrels" / "test.tsv")
    queries = cranfield.queries()
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        started = time.perf_counter()
        documents = cranfield.documents()
        for start in range(0, len(documents), INGEST_BATCH):
            batch = documents[start : start + INGEST_BATCH]
            await client.ingest(
                [DocumentToIngest(d.id, d.text.encode()) for d in batch], collection=COLLECTION
            )
        ingest_seconds = time.perf_counter() - started
        rows: list[dict[str, Any]] = []
        for label, mode in MODES.items():
            run: list[ir_measures.ScoredDoc] = []
            started = time.perf_counter()
            for query_id, text in queries.items():
                reply = await client.search(
                    text, collection=COLLECTION, top_k=DEPTH, mode=mode, cache_policy=gw.CACHE_POLICY_BYPASS
                )
                run += run_from_hits(query_id, (hit.document_id for hit in reply.hits))
            search_seconds = time.perf_counter() - started
            scores = ir_measures.calc_aggregate(MEASURES, qrels, run)
            rows.append(
                {
                    "system": f"ragline {label}",
                    "nDCG@10": scores[nDCG @ 10],
                    "Recall@100": scores[R @ 100],
                    "MRR@10": scores[RR @ 10],
                    "target nDCG@10": TARGETS[label],
                    "met": "yes" if scores[nDCG @ 10] >= TARGETS[label] else "NO",
                    "gateway Search ms/query": 1000 * search_seconds / len(queries),
                }
            )
    return {
        "rows": rows,
        "ingest_seconds": ingest_seconds,
        "documents": len(documents),
        "queries": len(queries),
    }


def main() -> None:
    """Runs the evaluation and prints and saves the table."""
    with tempfile.TemporaryDirectory(prefix="ragline-eval-") as state:
        stack = Stack(
            state=Path(state),
            services=("embedder", "retriever", "gateway"),
            free_ports=True,
            env={
                "DATABASE_URL": "",
                "GATEWAY_CHUNK_TOKENS": "512",
                "GATEWAY_RERANK": "false",
                "GATEWAY_EMBED_TIMEOUT_SECONDS": "600",
                "GATEWAY_RETRIEVE_TIMEOUT_SECONDS": "120",
            },
        )
        print(f"starting embedder, retriever and gateway (state in {state}) ...", flush=True)
        stack.start()
        try:
            print("ingesting the Cranfield abstracts through the gateway ...", flush=True)
            result = asyncio.run(_evaluate(stack))
        finally:
            stack.stop()
    write_report(
        "eval_cranfield",
        result["rows"] + REFERENCES,
        {
            "queries": result["queries"],
            "documents": result["documents"],
            "ingest seconds (chunk + embed + upsert via the gateway)": round(result["ingest_seconds"], 1),
            "ir-measures": ir_measures.__version__,
            "rankings": f"the gateway's public Search, top {DEPTH}, cache bypassed",
        },
    )


if __name__ == "__main__":
    main()
