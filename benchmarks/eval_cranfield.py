"""`make eval`: retrieval quality on Cranfield, measured through the real running services.

Starts the embedder, retriever and gateway as processes (`ragline.devstack`, a fresh embedded
PostgreSQL and Redis in a temporary directory), ingests the 1,400 Cranfield abstracts through the
gateway's IngestDocuments (chunking, embedding, upsert), then ranks the 225 queries in each search
mode and scores the rankings with `ir-measures` (trec_eval semantics): nDCG@10, Recall@100 and
MRR@10, beside the reference figures of `../shared/data/README.md`.

The gateway's public Search caps `top_k` below 100, so the 100-deep rankings that Recall@100 needs
come from the same path one level down: the embedder's Embed for the query vector and the
retriever's SearchChunks. The gateway's Search is also run for every query (top 10) and its
nDCG@10 printed as a check that the public API ranks the same. Abstracts are ingested whole
(GATEWAY_CHUNK_TOKENS=512, title and text), as in the reference runs; a document's rank is that
of its best chunk.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
import ir_measures
from ir_measures import RR, R, nDCG

from benchmarks.report import write_report
from ragline.devstack import Stack
from ragline.v1 import (
    common_pb2,
    embedder_service_pb2,
    embedder_service_pb2_grpc,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
    retriever_service_pb2,
    retriever_service_pb2_grpc,
)

COLLECTION = "cranfield"
DEPTH = 100
GATEWAY_TOP_K = 10
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


def shared_dir() -> Path:
    """The shared data folder: $RAGLINE_SHARED_DIR, or `shared/` beside the repository."""
    configured = os.environ.get("RAGLINE_SHARED_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_qrels(path: Path) -> list[ir_measures.Qrel]:
    """The graded judgments of a BEIR `qrels/test.tsv` (with its header line)."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return [ir_measures.Qrel(query, doc, int(score)) for query, doc, score in rows]


def run_from_hits(query_id: str, document_ids: Iterable[str]) -> list[ir_measures.ScoredDoc]:
    """A query's ranking as scored documents, each document once at its best chunk's rank."""
    ranked = list(dict.fromkeys(document_ids))
    # Scores that decrease with rank, so trec_eval's sort by score keeps our order exactly.
    return [ir_measures.ScoredDoc(query_id, doc, float(len(ranked) - i)) for i, doc in enumerate(ranked)]


async def _ingest(gateway: gateway_service_pb2_grpc.GatewayServiceStub, corpus: list[dict[str, Any]]) -> None:
    for start in range(0, len(corpus), INGEST_BATCH):
        documents = [
            gateway_service_pb2.DocumentContent(
                document_id=doc["_id"],
                content=f"{doc['title']}\n\n{doc['text']}".encode(),
                media_type="text/plain",
            )
            for doc in corpus[start : start + INGEST_BATCH]
        ]
        await gateway.IngestDocuments(
            gateway_service_pb2.IngestDocumentsRequest(collection=COLLECTION, documents=documents),
            timeout=600,
        )


async def _evaluate(
    stack: Stack, corpus: list[dict[str, Any]], queries: list[dict[str, Any]]
) -> dict[str, Any]:
    qrels = load_qrels(shared_dir() / "data" / "cranfield" / "qrels" / "test.tsv")
    async with (
        grpc.aio.insecure_channel(stack["gateway"].address) as gateway_channel,
        grpc.aio.insecure_channel(stack["embedder"].address) as embedder_channel,
        grpc.aio.insecure_channel(stack["retriever"].address) as retriever_channel,
    ):
        gateway = gateway_service_pb2_grpc.GatewayServiceStub(gateway_channel)
        embedder = embedder_service_pb2_grpc.EmbedderServiceStub(embedder_channel)
        retriever = retriever_service_pb2_grpc.RetrieverServiceStub(retriever_channel)
        started = time.perf_counter()
        await _ingest(gateway, corpus)
        ingest_seconds = time.perf_counter() - started
        collection = (
            await retriever.GetCollection(retriever_service_pb2.GetCollectionRequest(name=COLLECTION))
        ).collection
        embedded = await embedder.Embed(
            embedder_service_pb2.EmbedRequest(
                texts=[q["text"] for q in queries], input_type=embedder_service_pb2.INPUT_TYPE_QUERY
            ),
            timeout=600,
        )
        rows: list[dict[str, Any]] = []
        for label, mode in MODES.items():
            run: list[ir_measures.ScoredDoc] = []
            gateway_run: list[ir_measures.ScoredDoc] = []
            started = time.perf_counter()
            for query, vector in zip(queries, embedded.embeddings, strict=True):
                reply = await retriever.SearchChunks(
                    retriever_service_pb2.SearchChunksRequest(
                        collection=COLLECTION,
                        query_text=query["text"],
                        query_embedding=vector.values,
                        top_k=DEPTH,
                        mode=mode,
                    )
                )
                run += run_from_hits(query["_id"], (hit.document_id for hit in reply.hits))
            search_seconds = time.perf_counter() - started
            for query in queries:
                public = await gateway.Search(
                    gateway_service_pb2.SearchRequest(
                        collection=COLLECTION, query=query["text"], top_k=GATEWAY_TOP_K, mode=mode
                    )
                )
                gateway_run += run_from_hits(query["_id"], (hit.document_id for hit in public.hits))
            scores = ir_measures.calc_aggregate(MEASURES, qrels, run)
            rows.append(
                {
                    "system": f"ragline {label}",
                    "nDCG@10": scores[nDCG @ 10],
                    "Recall@100": scores[R @ 100],
                    "MRR@10": scores[RR @ 10],
                    "nDCG@10 via gateway Search": ir_measures.calc_aggregate([nDCG @ 10], qrels, gateway_run)[
                        nDCG @ 10
                    ],
                    "target nDCG@10": TARGETS[label],
                    "met": "yes" if scores[nDCG @ 10] >= TARGETS[label] else "NO",
                    "retriever ms/query": 1000 * search_seconds / len(queries),
                }
            )
    return {
        "rows": rows,
        "ingest_seconds": ingest_seconds,
        "chunks": collection.chunk_count,
        "documents": collection.document_count,
    }


def main() -> None:
    """Runs the evaluation and prints and saves the table."""
    data = shared_dir() / "data" / "cranfield"
    # A few abstracts are empty; the gateway rightly refuses those, and they match nothing anyway.
    corpus = [doc for doc in _jsonl(data / "corpus.jsonl") if (doc["title"] + doc["text"]).strip()]
    queries = _jsonl(data / "queries.jsonl")
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
            print(f"ingesting {len(corpus)} abstracts through the gateway ...", flush=True)
            result = asyncio.run(_evaluate(stack, corpus, queries))
        finally:
            stack.stop()
    write_report(
        "eval_cranfield",
        result["rows"] + REFERENCES,
        {
            "queries": len(queries),
            "documents": result["documents"],
            "chunks": result["chunks"],
            "ingest seconds (chunk + embed + upsert via the gateway)": round(result["ingest_seconds"], 1),
            "ir-measures": ir_measures.__version__,
            "rankings": f"embedder Embed + retriever SearchChunks, top {DEPTH}; gateway Search top {GATEWAY_TOP_K}",
        },
    )


if __name__ == "__main__":
    main()
