"""`make eval`: retrieval quality on every shared BEIR collection, measured through the real services.

Starts the embedder, retriever and gateway as processes (`ragline.devstack`, a fresh embedded
PostgreSQL and Redis in a temporary directory), ingests each collection of `../shared/data`
(`benchmarks.beir`: cranfield, medline, ...) through the gateway's IngestDocuments (chunking,
embedding, upsert) with the gateway's default settings, then ranks its queries in each search
mode through the public Search (top 100, cache bypassed) and scores the rankings with
`ir-measures` (trec_eval semantics): nDCG@10, Recall@100 and MRR@10, beside the reference
figures of `../shared/data/README.md` (textbook BM25, exact MiniLM, their exact fusion; whole
documents). The last rows are the means over the collections, which is what defaults are decided on.

A document's rank is that of its first hit. Settings come from the environment as for `make run`
(e.g. GATEWAY_CHUNK_TOKENS=200 make eval measures another chunk size).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures

from benchmarks import beir
from benchmarks.report import write_report
from ragline.client import DocumentToIngest, QueryOptions, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

DEPTH = 100
INGEST_BATCH = 20
# Settings the evaluation itself needs (deadlines long enough for a loaded machine, no reranker).
STACK_ENV = {
    "DATABASE_URL": "",
    "GATEWAY_RERANK": "false",
    "GATEWAY_EMBED_TIMEOUT_SECONDS": "600",
    "GATEWAY_RETRIEVE_TIMEOUT_SECONDS": "120",
}


@dataclass(frozen=True)
class System:
    """One way of searching that the evaluation scores: a label, its reference's mode, and the Query fields."""

    label: str
    reference: str
    options: QueryOptions


SYSTEMS = [
    System("keyword (BM25)", "keyword", {"mode": common_pb2.SEARCH_MODE_KEYWORD}),
    System("vector (MiniLM, HNSW)", "vector", {"mode": common_pb2.SEARCH_MODE_VECTOR}),
    System("hybrid (RRF)", "hybrid", {"mode": common_pb2.SEARCH_MODE_HYBRID}),
]


def start_stack(state: Path, env: Mapping[str, str] | None = None) -> Stack:
    """The embedder, retriever and gateway as processes, with STACK_ENV and `env` over the environment."""
    stack = Stack(
        state=state,
        services=("embedder", "retriever", "gateway"),
        free_ports=True,
        env={**STACK_ENV, **(env or {})},
    )
    stack.start()
    return stack


async def ingest(client: RaglineClient, collection: beir.Collection, name: str) -> float:
    """Ingests a collection's documents through the gateway into `name`; returns the seconds it took."""
    started = time.perf_counter()
    documents = collection.documents()
    for start in range(0, len(documents), INGEST_BATCH):
        batch = documents[start : start + INGEST_BATCH]
        await client.ingest([DocumentToIngest(d.id, d.text.encode()) for d in batch], collection=name)
    return time.perf_counter() - started


async def rank(
    client: RaglineClient, queries: Mapping[str, str], name: str, options: QueryOptions
) -> tuple[list[Any], float]:
    """Every query's ranking by the gateway's Search, and the mean milliseconds per Search."""
    run: list[Any] = []
    search: QueryOptions = {"collection": name, "top_k": DEPTH, "cache_policy": gw.CACHE_POLICY_BYPASS}
    search.update(options)
    started = time.perf_counter()
    for query_id, text in queries.items():
        reply = await client.search(text, **search)
        run += beir.run_from_ranking(query_id, (hit.document_id for hit in reply.hits))
    return run, 1000 * (time.perf_counter() - started) / max(len(queries), 1)


async def _evaluate(
    stack: Stack, collections: list[beir.Collection]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        for collection in collections:
            print(f"ingesting {collection.name} through the gateway ...", flush=True)
            seconds = await ingest(client, collection, collection.name)
            queries, qrels, references = collection.queries(), collection.qrels(), collection.references()
            notes[f"{collection.name}"] = (
                f"{len(collection.documents())} documents ingested in {seconds:.0f} s, {len(queries)} queries"
            )
            for system in SYSTEMS:
                run, ms = await rank(client, queries, collection.name, system.options)
                scores = beir.score(qrels, run)
                reference = references.get(system.reference, {})
                rows.append(
                    {
                        "collection": collection.name,
                        "system": system.label,
                        "nDCG@10": scores["nDCG@10"],
                        "ref nDCG@10": reference.get("nDCG@10", ""),
                        "Recall@100": scores["Recall@100"],
                        "ref Recall@100": reference.get("Recall@100", ""),
                        "MRR@10": scores["MRR@10"],
                        "ref MRR@10": reference.get("MRR@10", ""),
                        "Search ms/query": ms,
                    }
                )
    return rows + mean_rows(rows), notes


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system, the mean of every numeric column over the collections."""
    means = []
    for label in dict.fromkeys(row["system"] for row in rows):
        mine = [row for row in rows if row["system"] == label]
        mean: dict[str, Any] = {"collection": "mean", "system": label}
        for column, value in mine[0].items():
            values = [row[column] for row in mine]
            if isinstance(value, float) and all(isinstance(v, float) for v in values):
                mean[column] = statistics.fmean(values)
        means.append(mean)
    return means


def main() -> None:
    """Runs the evaluation and prints and saves the table."""
    collections = beir.collections()
    with tempfile.TemporaryDirectory(prefix="ragline-eval-") as state:
        print(f"starting embedder, retriever and gateway (state in {state}) ...", flush=True)
        stack = start_stack(Path(state))
        try:
            rows, notes = asyncio.run(_evaluate(stack, collections))
        finally:
            stack.stop()
    write_report(
        "eval_retrieval",
        rows,
        {
            **notes,
            "references": "../shared/data/README.md: bm25s + Snowball, exact MiniLM, their RRF (k 60), whole documents",
            "rankings": f"the gateway's public Search, top {DEPTH}, cache bypassed",
            "ir-measures": ir_measures.__version__,
        },
    )


if __name__ == "__main__":
    main()
