"""`make bench` (replicas): what spreading a service over replicas costs, at the same total CPU threads.

Three stacks side by side, each a gateway with its own embedded PostgreSQL and Valkey:

- baseline: one embedder with 2 threads (EMBEDDER_THREADS), one retriever with 8 connections
  (RETRIEVER_POOL_MAX, the PostgreSQL backends that do its work);
- 2 embedders: two embedders with 1 thread each, the same retriever;
- 2 retrievers: the same embedder, two retrievers with 4 connections each.

On one machine more replicas cannot add CPU, so this measures what the load balancer and the
extra processes cost: each replica configuration's throughput per thread over the baseline's
(the goal is at least 0.9). Rounds alternate between the stacks, in changing order, so that
drift of the machine hits all alike: an ingest job of new documents (documents/s from creation
to finish), then Searches from concurrent clients for a fixed time (QPS, caches bypassed).

Then failover: a probe channel like the gateway's (round robin, client-side health checking) but
without retries, so a call sent to a dead replica fails instead of being retried, calls both
replicas from concurrent loops while one replica is killed with SIGKILL; the failover time is
from the kill to the end of the last call that failed, i.e. how long the dead replica kept
getting calls. The replica is restarted between trials.

BENCH_REPLICAS_ROUNDS (default 3), BENCH_REPLICAS_DOCUMENTS (per ingest round, default 200),
BENCH_REPLICAS_SEARCH_SECONDS (default 8) and BENCH_REPLICAS_FAILOVER_TRIALS (default 3) size it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from benchmarks.report import RESULTS_DIR, write_report
from ragline.channels import service_config
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import (
    common_pb2,
    embedder_service_pb2,
    embedder_service_pb2_grpc,
    retriever_service_pb2,
    retriever_service_pb2_grpc,
)
from ragline.v1 import gateway_service_pb2 as gw

ROUNDS = int(os.environ.get("BENCH_REPLICAS_ROUNDS", "3"))
DOCUMENTS = int(os.environ.get("BENCH_REPLICAS_DOCUMENTS", "200"))
SEARCH_SECONDS = float(os.environ.get("BENCH_REPLICAS_SEARCH_SECONDS", "8"))
FAILOVER_TRIALS = int(os.environ.get("BENCH_REPLICAS_FAILOVER_TRIALS", "3"))
SEARCH_CLIENTS = 8
PROBE_LOOPS = 4
TOTAL_EMBEDDER_THREADS = 2
TOTAL_RETRIEVER_CONNECTIONS = 8
STATE = RESULTS_DIR / "state-replicas"
TOPICS = ("rivers", "volcanoes", "orchards", "bridges", "comets", "glaciers", "deserts", "harbours")

# name: (embedder replicas, retriever replicas)
CONFIGURATIONS = {"baseline": (1, 1), "2 embedders": (2, 1), "2 retrievers": (1, 2)}


def _stack(name: str, embedders: int, retrievers: int) -> Stack:
    env = {
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "LOG_LEVEL": "WARNING",
        "EMBEDDER_THREADS": str(TOTAL_EMBEDDER_THREADS // embedders),
        "RETRIEVER_POOL_MAX": str(TOTAL_RETRIEVER_CONNECTIONS // retrievers),
        "RETRIEVER_POOL_MIN": "1",
    }
    return Stack(
        state=STATE / name.replace(" ", "-"),
        free_ports=True,
        env=env,
        services=("embedder", "retriever", "gateway"),
        replicas={"embedder": embedders, "retriever": retrievers},
    )


def _document(round_number: int, i: int) -> DocumentToIngest:
    topic = TOPICS[i % len(TOPICS)]
    text = " ".join(
        f"Round {round_number} note {i} line {j} is about {topic}; its detail {i * 7919 + j} matters."
        for j in range(4)
    )
    return DocumentToIngest(f"r{round_number}-{i:04d}.txt", text.encode(), "text/plain")


async def _ingest(client: RaglineClient, round_number: int) -> float:
    """Documents/s of one job of DOCUMENTS new documents, from its creation until it has finished."""
    documents = [_document(round_number, i) for i in range(DOCUMENTS)]
    started = time.perf_counter()
    job = await client.create_ingest_job(documents, collection="bench")
    job = await client.wait_for_ingest_job(job.job_id, poll_seconds=0.1, timeout=1800)
    wall = time.perf_counter() - started
    if job.state != common_pb2.INGEST_JOB_STATE_SUCCEEDED:
        raise SystemExit(f"an ingest job ended {common_pb2.IngestJobState.Name(job.state)}: {job}")
    return DOCUMENTS / wall


async def _search_qps(client: RaglineClient) -> float:
    """Searches per second from SEARCH_CLIENTS concurrent loops over SEARCH_SECONDS, caches bypassed."""
    deadline = time.perf_counter() + SEARCH_SECONDS
    counts = [0] * SEARCH_CLIENTS

    async def loop(index: int) -> None:
        while time.perf_counter() < deadline:
            query = f"{TOPICS[(index + counts[index]) % len(TOPICS)]} detail {counts[index]}"
            await client.search(query, collection="bench", cache_policy=gw.CACHE_POLICY_BYPASS, timeout=60)
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(SEARCH_CLIENTS)))
    return sum(counts) / (time.perf_counter() - started)


async def _throughput(stacks: dict[str, Stack]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: {"ingest": [], "search": []} for name in stacks}
    clients = {
        name: RaglineClient(stack["gateway"].address, timeout=120, api_key=stack.api_key)
        for name, stack in stacks.items()
    }
    try:
        for client in clients.values():  # warm up: the first job and searches load and connect everything
            await _ingest(client, -1)
            await client.search("warm up", collection="bench", cache_policy=gw.CACHE_POLICY_BYPASS)
        for round_number in range(ROUNDS):
            names = list(stacks)
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                results[name]["ingest"].append(await _ingest(clients[name], round_number))
                results[name]["search"].append(await _search_qps(clients[name]))
                print(
                    f"round {round_number + 1}/{ROUNDS} {name}: "
                    f"{results[name]['ingest'][-1]:.1f} documents/s, {results[name]['search'][-1]:.1f} Searches/s",
                    flush=True,
                )
    finally:
        for client in clients.values():
            await client.close()
    return results


def _probe_channel(stack: Stack, name: str, service: str) -> grpc.aio.Channel:
    """A channel to every replica of `name` configured like the gateway's, but with retries off, so that a
    call routed to a dead replica fails where the gateway's would be retried on another."""
    options = [
        ("grpc.service_config", service_config([service], health_checked=True)),
        ("grpc.enable_retries", 0),
    ]
    return grpc.aio.insecure_channel(stack.target(name), options=options)


def _probe(stack: Stack, name: str) -> tuple[grpc.aio.Channel, Callable[[], Awaitable[Any]]]:
    """A probe channel to `name`'s replicas and a cheap call on it that a live replica answers."""
    if name == "embedder":
        channel = _probe_channel(stack, name, "ragline.v1.EmbedderService")
        embedder = embedder_service_pb2_grpc.EmbedderServiceStub(channel)
        return channel, lambda: embedder.GetModelInfo(embedder_service_pb2.GetModelInfoRequest(), timeout=5)
    channel = _probe_channel(stack, name, "ragline.v1.RetrieverService")
    retriever = retriever_service_pb2_grpc.RetrieverServiceStub(channel)
    request = retriever_service_pb2.ListStoredCollectionsRequest(tenant="default")
    return channel, lambda: retriever.ListStoredCollections(request, timeout=5)


async def _failover_seconds(stack: Stack, name: str) -> float:
    """Kills the second replica of `name` under a stream of probe calls; seconds from the kill to the end of
    the last call that failed (0 when none did)."""
    channel, call = _probe(stack, name)
    replica = stack.instances[name][1]
    try:
        for _ in range(50):  # both replicas connected and taking calls
            await call()
        stop = asyncio.Event()
        failed_at: list[float] = []

        async def loop() -> None:
            while not stop.is_set():
                try:
                    await call()
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    failed_at.append(time.perf_counter())

        loops = [asyncio.create_task(loop()) for _ in range(PROBE_LOOPS)]
        await asyncio.sleep(0.5)
        killed = time.perf_counter()
        await asyncio.to_thread(replica.kill)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*loops)
    finally:
        await channel.close()
    await asyncio.to_thread(replica.start)
    await asyncio.to_thread(replica.wait_healthy, 300)
    return max((at - killed for at in failed_at if at >= killed), default=0.0)


def main() -> None:
    """Runs the replica benchmark and writes bench-results/replicas.json."""
    shutil.rmtree(STATE, ignore_errors=True)
    stacks = {name: _stack(name, *counts) for name, counts in CONFIGURATIONS.items()}
    load_before = os.getloadavg()[0]
    try:
        for stack in stacks.values():
            stack.start(timeout=600)
        results = asyncio.run(_throughput(stacks))
        failover = {
            "embedder": [
                asyncio.run(_failover_seconds(stacks["2 embedders"], "embedder"))
                for _ in range(FAILOVER_TRIALS)
            ],
            "retriever": [
                asyncio.run(_failover_seconds(stacks["2 retrievers"], "retriever"))
                for _ in range(FAILOVER_TRIALS)
            ],
        }
    finally:
        for stack in stacks.values():
            stack.stop()
    base = {kind: statistics.median(results["baseline"][kind]) for kind in ("ingest", "search")}
    rows = []
    for name, (embedders, retrievers) in CONFIGURATIONS.items():
        ingest, search = (statistics.median(results[name][kind]) for kind in ("ingest", "search"))
        rows.append(
            {
                "configuration": name,
                "embedders x threads": f"{embedders} x {TOTAL_EMBEDDER_THREADS // embedders}",
                "retrievers x connections": f"{retrievers} x {TOTAL_RETRIEVER_CONNECTIONS // retrievers}",
                "ingest documents/s": ingest,
                "Search QPS": search,
                # The same total threads in every configuration: per thread, the ratio of throughputs.
                "ingest per-thread ratio": ingest / base["ingest"],
                "Search per-thread ratio": search / base["search"],
            }
        )
    write_report(
        "replicas",
        rows,
        {
            "goal": "per-thread ratio >= 0.9 of the baseline (one replica)",
            "rounds": f"{ROUNDS} (medians), {DOCUMENTS} documents per job, Searches for {SEARCH_SECONDS:g} s "
            f"from {SEARCH_CLIENTS} clients",
            "failover ms (embedder)": ", ".join(f"{s * 1000:.0f}" for s in failover["embedder"]),
            "failover ms (retriever)": ", ".join(f"{s * 1000:.0f}" for s in failover["retriever"]),
            "load average (1 min) before, after": f"{load_before:.2f}, {os.getloadavg()[0]:.2f}",
        },
    )


if __name__ == "__main__":
    main()
