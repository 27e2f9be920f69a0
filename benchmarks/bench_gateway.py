"""`make bench` (gateway): Search and Ask through the running stack, cold and warm cache, 1 and 8 clients.

Starts the four services as processes with a state folder under bench-results/, so the
Cranfield abstracts are ingested (through the gateway) only on the first run. Reports
p50/p99 latency and QPS per case, each stage's median, and where the rest of the time went:

- overhead: the gateway's own work, the `duration_seconds` it reports minus the time of the
  stages on its critical path. The gateway looks the collection up while it reads the cache and
  then embeds the query, so the first "collection" counts only where it is longer than the first
  "cache" and "embed" together (BENCH_GATEWAY_SEQUENTIAL_STAGES=1 sums every stage instead, for
  a gateway that runs them one after another).
- transport: the client-measured latency minus the gateway's `duration_seconds`: the hop to the
  gateway and back, (de)serialisation, and the time a request or its reply waits for a busy
  event loop at either end (this client's included), which is what grows with more clients on
  two shared cores.

Cold means CACHE_POLICY_BYPASS (every stage runs, no cache is read or written); miss means the
default policy on an empty cache (every stage runs, reading and filling the cache); warm means
the same requests again (Search is served by the retrieval layer, Ask by the answer layer).
Redis is emptied before each cold and miss case, so the embedder's own cache of query vectors
is cold too.

Auth on and off, side by side: a second gateway with GATEWAY_AUTH=off runs on the same stack,
and one client sends the same warm Searches (served by the retrieval cache, so the credential
check is the largest share it can be) with the same API key to both, alternating in rounds so
that drift of the machine hits both alike. The difference of the two p50s is what the check of
a cached key costs (target: under 0.2 ms).

BENCH_GATEWAY_ASK=0 skips Ask, BENCH_GATEWAY_CLIENTS=1 runs 1 client only (default "1,8"), and
BENCH_GATEWAY_STATE chooses another state folder.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import redis

from benchmarks import beir
from benchmarks.report import percentile, write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import gateway_service_pb2 as gw

COLLECTION = "cranfield"
STATE = Path(
    os.environ.get("BENCH_GATEWAY_STATE")
    or Path(__file__).resolve().parent.parent / "bench-results" / "state-gateway"
)
SEQUENTIAL_STAGES = os.environ.get("BENCH_GATEWAY_SEQUENTIAL_STAGES", "0") == "1"
RUN_ASK = os.environ.get("BENCH_GATEWAY_ASK", "1") != "0"
FAILURES: list[str] = []
CLIENTS = [int(n) for n in os.environ.get("BENCH_GATEWAY_CLIENTS", "1,8").split(",")]
SEARCH_QUERIES = 120
AUTH_ROUNDS = int(os.environ.get("BENCH_GATEWAY_AUTH_ROUNDS", "20"))
AUTH_SEARCHES_PER_ROUND = 100
AUTH_TARGET_MS = 0.2
ASK_QUESTIONS = 8
ASK_MAX_TOKENS = 32


async def ensure_ingested(client: RaglineClient) -> None:
    """Ingests the Cranfield abstracts into COLLECTION unless the state folder already holds them
    (shared with compare_haystack, which searches the same collection)."""
    docs = beir.load("cranfield").documents()
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


def critical_seconds(stages: list[tuple[str, float]]) -> float:
    """The time of the stages on the request's critical path.

    `stages` are (name, seconds) in the order they started. The gateway runs the collection
    lookup beside its first cache read and, when that misses, the query embedding (one after
    the other), so those count as the longer of the lookup and the read plus the embedding;
    every later stage ran on its own.
    """
    if SEQUENTIAL_STAGES or not stages or stages[0][0] != "collection":
        return sum(seconds for _, seconds in stages)
    beside = 0.0
    rest = 1
    seen: set[str] = set()
    while rest < len(stages) and stages[rest][0] in ("cache", "embed") and stages[rest][0] not in seen:
        name, seconds = stages[rest]
        seen.add(name)
        beside += seconds
        rest += 1
        if name == "embed":
            break
    return max(stages[0][1], beside) + sum(seconds for _, seconds in stages[rest:])


async def _run(
    client: RaglineClient, kind: str, texts: list[str], concurrency: int, policy: gw.CachePolicy, case: str
) -> dict[str, Any]:
    latencies: list[float] = []
    overheads: list[float] = []
    transports: list[float] = []
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
            critical = critical_seconds([(t.stage, t.duration_seconds) for t in reply.stage_timings])
            overheads.append(reply.duration_seconds - critical)
            transports.append(elapsed - reply.duration_seconds)
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
        "cache": case,
        "clients": concurrency,
        "requests": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "qps": len(latencies) / wall,
        "overhead_p50_ms": statistics.median(overheads) * 1000,
        "transport_p50_ms": statistics.median(transports) * 1000,
        "served_by": ",".join(f"{k}:{v}" for k, v in sorted(layers.items())),
        "stage_p50_ms": " ".join(f"{k}={statistics.median(v) * 1000:.1f}" for k, v in stages.items()),
    }


async def _timed_searches(client: RaglineClient, texts: list[str]) -> list[float]:
    latencies = []
    for text in texts:
        started = time.perf_counter()
        await client.search(text, collection=COLLECTION, top_k=10)
        latencies.append(time.perf_counter() - started)
    return latencies


async def _auth_on_and_off(stack: Stack, texts: list[str]) -> tuple[list[dict[str, Any]], float]:
    """Warm Search p50 through the stack's gateway (auth on) and a replica with auth off; and their difference."""
    replica = stack.start_gateway_replica(
        "bench-auth-off", {"GATEWAY_AUTH": "off", "GATEWAY_INGEST_WORKERS": "0"}
    )
    latencies: dict[str, list[float]] = {"on": [], "off": []}
    try:
        async with (
            RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as on,
            RaglineClient(replica.address, timeout=600, api_key=stack.api_key) as off,
        ):
            clients = {"on": on, "off": off}
            texts = texts[:AUTH_SEARCHES_PER_ROUND]
            for client in clients.values():
                await _timed_searches(client, texts)  # fills the cache, warms connections and the key cache
            for round_number in range(AUTH_ROUNDS):
                order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                for auth in order:
                    latencies[auth] += await _timed_searches(clients[auth], texts)
    finally:
        replica.stop()
    rows = [
        {
            "rpc": "Search",
            "cache": "warm",
            "clients": 1,
            "auth": auth,
            "requests": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
        }
        for auth, values in latencies.items()
    ]
    return rows, (percentile(latencies["on"], 50) - percentile(latencies["off"], 50)) * 1000


async def _bench(stack: Stack) -> tuple[list[dict[str, Any]], float]:
    rows = []
    queries = list(beir.load("cranfield").queries().values())
    cache = redis.Redis.from_url(stack["gateway"].env["REDIS_URL"])
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        await ensure_ingested(client)
        searches = queries[:SEARCH_QUERIES]
        # Warms up connections and models, and the gateway's knowledge of the collection.
        await _run(client, "Search", searches[:10], 1, gw.CACHE_POLICY_BYPASS, "warm-up")
        cases = [("Search", searches)]
        if RUN_ASK:
            cases.append(("Ask", queries[SEARCH_QUERIES : SEARCH_QUERIES + ASK_QUESTIONS]))
        for kind, texts in cases:
            try:
                for concurrency in CLIENTS:
                    for policy, case in (
                        (gw.CACHE_POLICY_BYPASS, "cold"),
                        (gw.CACHE_POLICY_UNSPECIFIED, "miss"),
                        (gw.CACHE_POLICY_UNSPECIFIED, "warm"),
                    ):
                        if case != "warm":
                            cache.flushall()
                        failed = f"{kind} {case} {concurrency}"
                        rows.append(await _run(client, kind, texts, concurrency, policy, case))
            except grpc.aio.AioRpcError as exc:
                # Keep what was measured; the failure is reported, and the benchmark fails, at the end.
                FAILURES.append(f"{failed}: {exc.code().name}: {exc.details()}")
        auth_rows, auth_overhead_ms = await _auth_on_and_off(stack, searches)
    cache.close()
    return rows + auth_rows, auth_overhead_ms


def main() -> None:
    """Runs the gateway benchmark and writes bench-results/gateway.json."""
    # Eight concurrent Asks queue at the one local model, so the generate stage may wait minutes.
    env = {"REDIS_URL": "", "DATABASE_URL": "", "GATEWAY_GENERATE_TIMEOUT_SECONDS": "900"}
    stack = Stack(state=STATE, free_ports=True, env=env)
    stack.start()
    try:
        rows, auth_overhead_ms = asyncio.run(_bench(stack))
    except grpc.aio.AioRpcError as exc:
        raise SystemExit(f"benchmark failed: {exc.code().name}: {exc.details()}") from None
    finally:
        stack.stop()
    write_report(
        "gateway",
        rows,
        {
            "targets": "Search cold p50 < 15 ms, warm p50 < 2 ms; gateway overhead p50 < 2 ms; "
            f"auth overhead p50 < {AUTH_TARGET_MS} ms",
            "auth_overhead_p50_ms": round(auth_overhead_ms, 4),
            "overhead": "the gateway's duration minus the critical path's stages"
            + (" (every stage summed)" if SEQUENTIAL_STAGES else " (collection beside first cache + embed)"),
            "transport": "the client's latency minus the gateway's duration (hops, queues at both ends)",
            "reference": "Haystack 2 hybrid query in one process on Cranfield: 33 ms p50 (7 ms embedding)",
            **({"failed": "; ".join(FAILURES)} if FAILURES else {}),
        },
    )
    if FAILURES:
        raise SystemExit(f"benchmark failed: {'; '.join(FAILURES)}")


if __name__ == "__main__":
    main()
