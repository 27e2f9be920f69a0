"""`make bench` (read replicas): Search latency on a streaming standby next to the primary's, and how
long a killed standby keeps being asked and takes to rejoin.

One retriever on the embedded PostgreSQL 18 with a streaming standby of it (`Stack(pg_standby=True)`).
One client alternates rounds of the same hybrid searches, as the gateway sends them (with the
collection's generation and creation time: the replica may answer) and without the creation time
(the primary answers), so that drift of the machine hits both alike; the retriever's
`ragline_retriever_searches_total` confirms who answered. Then, with searches running, it kills
the standby (SIGKILL to every process) and reports the time until the retriever took it out of
rotation and the searches that failed (none expected: a search on a dead replica is answered by the
primary), and, after restarting it, the time until it is back in rotation.

BENCH_READ_REPLICA_ROUNDS sets the rounds (default 5); BENCH_READ_REPLICA_CHUNKS the collection's size.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import time
from typing import Any

import grpc

from benchmarks.report import RESULTS_DIR, percentile, write_report
from ragline.devstack import ServiceProcess, Stack
from ragline.embedded_standby import EmbeddedStandby
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

ROUNDS = int(os.environ.get("BENCH_READ_REPLICA_ROUNDS", "5"))
CHUNKS = int(os.environ.get("BENCH_READ_REPLICA_CHUNKS", "5000"))
SEARCHES = 200
DIMENSION = 64
TENANT = "bench"
COLLECTION = "replicas"
STATE = RESULTS_DIR / "state-read-replicas"
WORDS = [
    "harbour",
    "lighthouse",
    "keeper",
    "orchard",
    "apple",
    "river",
    "bridge",
    "tower",
    "market",
    "castle",
    "garden",
    "winter",
]


def _vector(rng: random.Random) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(DIMENSION)]


async def _load(stub: pb_grpc.RetrieverServiceStub, rng: random.Random) -> common_pb2.Collection:
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(
            tenant=TENANT, name=COLLECTION, embedding_model="random", dimension=DIMENSION
        )
    )
    for start in range(0, CHUNKS, 500):
        documents = [
            pb.UpsertDocumentRequest(
                document_id=f"doc-{i}",
                chunks=[
                    common_pb2.ChunkInput(text=" ".join(rng.choices(WORDS, k=12)), embedding=_vector(rng))
                ],
            )
            for i in range(start, min(start + 500, CHUNKS))
        ]
        await stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(tenant=TENANT, collection=COLLECTION, requests=documents),
            timeout=300,
        )
    reply: pb.GetStoredCollectionResponse = await stub.GetStoredCollection(
        pb.GetStoredCollectionRequest(tenant=TENANT, name=COLLECTION)
    )
    return reply.collection


def _request(collection: common_pb2.Collection, rng: random.Random, replica: bool) -> pb.SearchChunksRequest:
    request = pb.SearchChunksRequest(
        tenant=TENANT,
        collection=COLLECTION,
        query_text=" ".join(rng.choices(WORDS, k=3)),
        query_embedding=_vector(rng),
        top_k=10,
        mode=common_pb2.SEARCH_MODE_HYBRID,
        min_generation=collection.generation,
    )
    if replica:
        request.collection_create_time.CopyFrom(collection.create_time)
    return request


async def _round(stub: pb_grpc.RetrieverServiceStub, requests: list[pb.SearchChunksRequest]) -> list[float]:
    latencies = []
    for request in requests:
        started = time.perf_counter()
        await stub.SearchChunks(request, timeout=30)
        latencies.append(time.perf_counter() - started)
    return latencies


def _served(retriever: ServiceProcess, database: str) -> float:
    return retriever.metric("ragline_retriever_searches_total", {"database": database})


def _in_rotation(retriever: ServiceProcess) -> bool:
    return retriever.metric("ragline_retriever_read_replica_in_rotation", {"replica": "0"}) == 1


async def _until(condition: Any, timeout: float = 120.0) -> float:
    """Seconds until `condition()` holds, polled every 10 ms."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > timeout:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _latency(
    retriever: ServiceProcess, stub: pb_grpc.RetrieverServiceStub, collection: common_pb2.Collection
) -> list[dict[str, Any]]:
    rng = random.Random(1)
    latencies: dict[str, list[float]] = {"replica": [], "primary": []}
    served_before = {name: _served(retriever, name) for name in latencies}
    for name in latencies:  # warm both pools' connections and plans
        await _round(stub, [_request(collection, rng, name == "replica") for _ in range(20)])
    served_warm = {name: _served(retriever, name) - served_before[name] for name in latencies}
    for round_number in range(ROUNDS):
        order = list(latencies) if round_number % 2 == 0 else list(reversed(latencies))
        for name in order:
            requests = [_request(collection, rng, name == "replica") for _ in range(SEARCHES)]
            latencies[name] += await _round(stub, requests)
    answered = {
        name: _served(retriever, name) - served_before[name] - served_warm[name] for name in latencies
    }
    return [
        {
            "database": name,
            "searches": len(values),
            "answered_by_it": int(answered[name]),
            "p50_ms": percentile(values, 50) * 1000,
            "p95_ms": percentile(values, 95) * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
        }
        for name, values in latencies.items()
    ]


async def _failover(
    retriever: ServiceProcess,
    standby: EmbeddedStandby,
    stub: pb_grpc.RetrieverServiceStub,
    collection: common_pb2.Collection,
) -> dict[str, Any]:
    rng = random.Random(2)
    failures = 0
    stop = asyncio.Event()

    async def searching() -> None:
        nonlocal failures
        while not stop.is_set():
            try:
                await stub.SearchChunks(_request(collection, rng, True), timeout=30)
            except grpc.aio.AioRpcError:
                failures += 1

    task = asyncio.create_task(searching())
    try:
        await _until(lambda: _in_rotation(retriever))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(standby.kill)
        killed = time.monotonic()  # every process of the standby is gone
        await _until(lambda: not _in_rotation(retriever))
        left = time.monotonic() - killed
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.to_thread(standby.start)
        standby_up = time.monotonic() - started
        await _until(lambda: _in_rotation(retriever))
        rejoined = time.monotonic() - started
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await task
    return {
        "left_rotation_s": round(left, 3),
        "standby_restart_s": round(standby_up, 3),
        "rejoined_after_restart_s": round(rejoined, 3),
        "failed_searches": failures,
    }


async def _bench(stack: Stack) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    retriever, standby = stack["retriever"], stack.standby
    assert standby is not None
    async with grpc.aio.insecure_channel(retriever.address) as channel:
        stub = pb_grpc.RetrieverServiceStub(channel)
        collection = await _load(stub, random.Random(0))
        await _until(lambda: _in_rotation(retriever))
        rows = await _latency(retriever, stub, collection)
        failover = await _failover(retriever, standby, stub, collection)
    return rows, failover


def main() -> None:
    """Starts the retriever with a standby, measures, prints the table and writes bench-results/read_replicas.json."""
    stack = Stack(
        state=STATE,
        services=("retriever",),
        free_ports=True,
        env={"DATABASE_URL": "", "REDIS_URL": ""},
        pg_standby=True,
    )
    shutil.rmtree(STATE / "postgres", ignore_errors=True)  # a fresh collection each run
    stack.start()
    try:
        rows, failover = asyncio.run(_bench(stack))
    finally:
        stack.stop()
    p50 = {row["database"]: row["p50_ms"] for row in rows}
    write_report(
        "read_replicas",
        rows,
        {
            "replica_minus_primary_p50_ms": round(p50["replica"] - p50["primary"], 4),
            "check_interval_s": 1.0,
            "chunks": CHUNKS,
            "load_average": os.getloadavg()[0],
            **failover,
        },
    )


if __name__ == "__main__":
    main()
