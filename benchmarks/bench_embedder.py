"""Embedder throughput and latency: the raw model in-process against the service under concurrency.

`python -m benchmarks.bench_embedder` (run by `make bench`). It measures:

- passages/s of the local model called directly in this process, in batches of 32: the ceiling;
- passages/s through the real service process over gRPC with 1, 4 and 16 concurrent clients,
  each sending requests of 8 passages, and the ratio to the ceiling (micro-batching should
  bring it near 1 under concurrency);
- query-embedding latency (p50, p99) while the 16 clients keep the service busy, and idle;
- the speed-up when every passage is already in the Redis cache.

Passages are Cranfield abstracts from `../shared/data/cranfield/corpus.jsonl` (or
`$RAGLINE_SHARED_DIR/data/cranfield`). The cache is on (embedded Valkey) and emptied before
each run, so throughput runs pay the cache round trips but never hit it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import grpc
import redis

from benchmarks.report import percentile, write_report
from ragline.config import load_config
from ragline.devstack import Stack
from ragline.embedded_redis import EmbeddedRedis
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline_embedder.backends import LocalBackend
from ragline_embedder.config import EmbedderConfig

PASSAGES = int(os.environ.get("BENCH_EMBEDDER_PASSAGES", "96"))
REQUEST_SIZE = 8
CLIENTS = (1, 4, 16)
QUERIES = [
    "what is the lift of a swept wing at low speed?",
    "heat transfer in hypersonic flow",
    "buckling of shells",
]


def load_passages() -> list[str]:
    """The first abstracts of the Cranfield collection."""
    shared = Path(os.environ.get("RAGLINE_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
    with (shared / "data" / "cranfield" / "corpus.jsonl").open() as corpus:
        documents = [json.loads(line) for line in itertools.islice(corpus, PASSAGES)]
    return [f"{d['title']} {d['text']}".strip() for d in documents]


def raw_model_rate(passages: list[str]) -> float:
    """Passages/s of the model called directly, in forward passes of 32."""
    backend = LocalBackend.load(load_config(EmbedderConfig, environ={}))
    backend.encode(passages[:32])  # warm-up
    started = time.perf_counter()
    backend.encode(passages)
    return len(passages) / (time.perf_counter() - started)


async def service_run(
    stub: EmbedderServiceStub, passages: list[str], clients: int, measure_queries: bool
) -> tuple[float, list[float]]:
    """Passages/s with `clients` concurrent clients, and query latencies measured meanwhile."""
    requests = [passages[i : i + REQUEST_SIZE] for i in range(0, len(passages), REQUEST_SIZE)]
    pending = iter(requests)
    done = asyncio.Event()
    latencies: list[float] = []

    async def client() -> None:
        for batch in pending:
            await stub.Embed(pb.EmbedRequest(texts=batch, input_type=pb.INPUT_TYPE_PASSAGE), timeout=120)

    async def querier() -> None:
        for number, query in enumerate(itertools.cycle(QUERIES)):
            if done.is_set():
                return
            started = time.perf_counter()
            # Numbered so that no query is a cache hit.
            text = f"{query} ({clients} clients, {number})"
            await stub.Embed(pb.EmbedRequest(texts=[text], input_type=pb.INPUT_TYPE_QUERY), timeout=60)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)

    query_task = asyncio.create_task(querier()) if measure_queries else None
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    done.set()
    if query_task is not None:
        await query_task
    return len(passages) / elapsed, latencies


async def idle_query_latencies(stub: EmbedderServiceStub, count: int = 60) -> list[float]:
    """Latency of one query at a time on an otherwise idle service (unique texts: no cache hits)."""
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await stub.Embed(pb.EmbedRequest(texts=[f"{QUERIES[i % 3]} ({i})"], input_type=pb.INPUT_TYPE_QUERY))
        latencies.append(time.perf_counter() - started)
    return latencies


async def measure_service(
    address: str, cache: redis.Redis, passages: list[str], raw: float
) -> tuple[list[dict[str, object]], dict[str, object]]:
    rows: list[dict[str, object]] = []
    notes: dict[str, object] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = EmbedderServiceStub(channel)
        await service_run(stub, passages[:64], 4, measure_queries=False)  # warm-up
        idle = await idle_query_latencies(stub)
        notes["idle_query_p50_ms"] = percentile(idle, 50) * 1000
        notes["idle_query_p99_ms"] = percentile(idle, 99) * 1000
        for clients in CLIENTS:
            cache.flushdb()
            rate, latencies = await service_run(
                stub, passages, clients, measure_queries=clients == CLIENTS[-1]
            )
            row: dict[str, object] = {"clients": clients, "passages_per_s": rate, "ratio_to_raw": rate / raw}
            if latencies:
                row["query_p50_ms"] = percentile(latencies, 50) * 1000
                row["query_p99_ms"] = percentile(latencies, 99) * 1000
                row["queries"] = len(latencies)
            rows.append(row)
        # The last run left every passage in the cache: the same run again is all hits.
        cached_rate, _ = await service_run(stub, passages, CLIENTS[-1], measure_queries=False)
        notes["cache_hit_passages_per_s"] = cached_rate
        notes["cache_hit_speedup"] = cached_rate / rows[-1]["passages_per_s"]  # type: ignore[operator]
    return rows, notes


def main() -> None:
    """Runs the benchmark and writes bench-results/embedder.json."""
    passages = load_passages()
    raw = raw_model_rate(passages)
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as state:
        valkey = EmbeddedRedis(Path(state) / "valkey")
        url = valkey.start()
        stack = Stack(state=Path(state), services=("embedder",), free_ports=True, env={"REDIS_URL": url})
        try:
            stack.start()
            cache = redis.Redis.from_url(url)
            try:
                rows, notes = asyncio.run(measure_service(stack["embedder"].address, cache, passages, raw))
            except grpc.RpcError:
                print(stack["embedder"].log_tail())
                raise
        finally:
            stack.stop()
            valkey.stop()
            import shutil

            shutil.copytree(Path(state) / "logs", "/tmp/benchdbg", dirs_exist_ok=True)
    notes = {
        "raw_model_passages_per_s": raw,
        "passages": len(passages),
        "request_size": REQUEST_SIZE,
        **notes,
    }
    write_report("embedder", rows, notes)


if __name__ == "__main__":
    main()
