"""`make bench` (gateway): Search and Ask through the running stack, cold and warm cache, 1 and 8 clients.

Starts the four services as processes with a state folder under bench-results/, so the
Cranfield abstracts are ingested (through the gateway) only on the first run. Reports
p50/p99 latency and QPS per case, and the gateway's own overhead: the client-measured
latency minus the sum of the stage times the gateway reports.

Cold means CACHE_POLICY_BYPASS (every stage runs); warm means the same requests again after
one pass with the cache on (Search is served by the retrieval layer, Ask by the answer layer).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks import cranfield
from benchmarks.report import percentile, write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import gateway_service_pb2 as gw

COLLECTION = "cranfield"
STATE = Path(__file__).resolve().parent.parent / "bench-results" / "state-gateway"
SEARCH_QUERIES = 120
ASK_QUESTIONS = 8
ASK_MAX_TOKENS = 32


async def _ensure_ingested(client: RaglineClient) -> None:
    docs = cranfield.documents()
    try:
        listed = await client.list_documents(collection=COLLECTION, page_size=1000)
        if len(listed.documents) + (1000 if listed.next_page_token else 0) >= len(docs):
            return
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
    started = time.perf_counter()
    for start in range(0, len(docs), 50):
        batch = [DocumentToIngest(d.id, d.text.encode()) for d in docs[start : start + 50]]
        await client.ingest(batch, collection=COLLECTION, timeout=600)
    print(f"ingested {len(docs)} Cranfield abstracts in {time.perf_counter() - started:.0f} s")


async def _run(
    client: RaglineClient, kind: str, texts: list[str], concurrency: int, policy: gw.CachePolicy
) -> dict[str, Any]:
    latencies: list[float] = []
    overheads: list[float] = []
    layers: dict[str, int] = {}
    stages: dict[str, list[float]] = {}
    queue = list(texts)

    async def worker() -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            if kind == "Search":
                reply: Any = await client.search(text, collection=COLLECTION, top_k=10, cache_policy=policy)
            else:
                reply = await client.ask(
                    text, collection=COLLECTION, max_tokens=ASK_MAX_TOKENS, cache_policy=policy
                )
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)
            overheads.append(elapsed - sum(t.duration_seconds for t in reply.stage_timings))
            per_stage: dict[str, float] = {}
            for timing in reply.stage_timings:
                per_stage[timing.stage] = per_stage.get(timing.stage, 0.0) + timing.duration_seconds
            for stage, seconds in per_stage.items():
                stages.setdefault(stage, []).append(seconds)
            layer = gw.CacheLayer.Name(reply.cache_layer).removeprefix("CACHE_LAYER_").lower()
            layers[layer] = layers.get(layer, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "rpc": kind,
        "cache": "cold" if policy == gw.CACHE_POLICY_BYPASS else "warm",
        "clients": concurrency,
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "qps": len(latencies) / wall,
        "overhead_p50_ms": statistics.median(overheads) * 1000,
        "served_by": ",".join(f"{k}:{v}" for k, v in sorted(layers.items())),
        "stage_p50_ms": " ".join(f"{k}={statistics.median(v) * 1000:.1f}" for k, v in stages.items()),
    }


async def _bench(stack: Stack) -> list[dict[str, Any]]:
    rows = []
    queries = list(cranfield.queries().values())
    async with RaglineClient(stack["gateway"].address, timeout=600) as client:
        await _ensure_ingested(client)
        searches = queries[:SEARCH_QUERIES]
        await _run(
            client, "Search", searches[:10], 1, gw.CACHE_POLICY_BYPASS
        )  # warm up connections and models
        for concurrency in (1, 8):
            rows.append(await _run(client, "Search", searches, concurrency, gw.CACHE_POLICY_BYPASS))
            await _run(client, "Search", searches, concurrency, gw.CACHE_POLICY_REFRESH)
            rows.append(await _run(client, "Search", searches, concurrency, gw.CACHE_POLICY_UNSPECIFIED))
        questions = queries[SEARCH_QUERIES : SEARCH_QUERIES + ASK_QUESTIONS]
        for concurrency in (1, 8):
            rows.append(await _run(client, "Ask", questions, concurrency, gw.CACHE_POLICY_BYPASS))
            await _run(client, "Ask", questions, concurrency, gw.CACHE_POLICY_REFRESH)
            rows.append(await _run(client, "Ask", questions, concurrency, gw.CACHE_POLICY_UNSPECIFIED))
    return rows


def main() -> None:
    """Runs the gateway benchmark and writes bench-results/gateway.json."""
    # Eight concurrent Asks queue at the one local model, so the generate stage may wait minutes.
    env = {"REDIS_URL": "", "DATABASE_URL": "", "GATEWAY_GENERATE_TIMEOUT_SECONDS": "900"}
    stack = Stack(state=STATE, free_ports=True, env=env)
    stack.start()
    try:
        rows = asyncio.run(_bench(stack))
    except grpc.aio.AioRpcError as exc:
        raise SystemExit(f"benchmark failed: {exc.code().name}: {exc.details()}") from None
    finally:
        stack.stop()
    write_report(
        "gateway",
        rows,
        {
            "targets": "Search cold p50 < 15 ms, warm p50 < 2 ms; gateway overhead p50 < 2 ms",
            "reference": "Haystack 2 hybrid query in one process on Cranfield: 33 ms p50 (7 ms embedding)",
        },
    )


if __name__ == "__main__":
    main()
