"""`make bench` (tracing): what OpenTelemetry costs a Search and an Ask, with tracing off and on, side by side.

Three stacks of the four services (each with its embedded PostgreSQL and Valkey, the same
documents): one untraced (no OTEL_* variable: nothing installed), two exporting every span to a
real OTLP/gRPC receiver (`benchmarks.otlp_receiver`), head sampling at 100% and at 10%
(`parentbased_traceidratio`). One client calls the stacks in turn, call by call, so that drift of
the machine's load hits all three alike, and reports p50/p99 of Search and Ask with the cache bypassed
(every call runs embed, retrieve and, for Ask, generate), and each traced stack's p50 cost over the
untraced one. Only one stack is busy at a time.

Since the machine may be shared, latency alone is noisy: each row also gives the CPU time per call
of each of the stack's four service processes (user + system, from psutil, so the exporters' threads
count) and of the client (its thread's CPU time; the receiver runs on other threads), and the cost of
tracing as their sum over the untraced stack's. The embedder's share is most of it and the noisiest
(ONNX Runtime's threads spin for a while after each batch, longer on a busy machine), so the
gateway's and retriever's columns show best what tracing itself costs.

BENCH_TRACING_ROUNDS sets the rounds (default 4).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import psutil

from benchmarks.otlp_receiver import OtlpReceiver
from benchmarks.report import RESULTS_DIR, percentile, write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import gateway_service_pb2

ROUNDS = int(os.environ.get("BENCH_TRACING_ROUNDS", "4"))
SEARCHES_PER_ROUND = 60
ASKS_PER_ROUND = 20
STATE = RESULTS_DIR / "state-tracing"
BYPASS = gateway_service_pb2.CACHE_POLICY_BYPASS
QUESTIONS = [
    "How tall is the Eiffel Tower?",
    "What colour are ripe bananas?",
    "At what temperature does water boil?",
    "Who designed the tower in Paris?",
]
DOCUMENTS = [
    DocumentToIngest(
        "eiffel",
        b"The Eiffel Tower is a wrought-iron lattice tower in Paris, named after the engineer Gustave "
        b"Eiffel, whose company built it for the 1889 World's Fair. It is 330 metres tall.",
    ),
    DocumentToIngest(
        "bananas", b"Ripe bananas are usually yellow, elongated fruits that are rich in potassium."
    ),
    DocumentToIngest("water", b"At sea level pure water boils at 100 degrees Celsius and freezes at 0."),
]
# Each configuration's OTEL_* settings; the receiver's endpoint is added to the traced ones.
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "off": {},
    "on_100pct": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "on_10pct": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
}


class _Cpu:
    """CPU seconds spent by a stack's service processes, to take before and after a batch."""

    def __init__(self, stack: Stack) -> None:
        self._processes = {
            p.spec.name: psutil.Process(p.process.pid) for p in stack.all_processes() if p.process
        }

    def now(self) -> dict[str, float]:
        """CPU seconds so far of each service, by name."""
        return {name: sum(process.cpu_times()[:2]) for name, process in self._processes.items()}


async def _timed(calls: int, make: Callable[[int], Awaitable[Any]]) -> list[float]:
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        await make(i)
        latencies.append(time.perf_counter() - started)
    return latencies


async def _bench(stacks: dict[str, Stack]) -> list[dict[str, Any]]:
    clients = {
        name: RaglineClient(stack["gateway"].address, timeout=120, api_key=stack.api_key)
        for name, stack in stacks.items()
    }
    samples: dict[tuple[str, str], list[float]] = {(n, c): [] for n in stacks for c in ("search", "ask")}
    # CPU seconds spent by each stack's processes (and the client) on each kind of call.
    cpu: dict[tuple[str, str], dict[str, float]] = {key: {} for key in samples}
    # The client thread's CPU seconds for each stack's calls (it serves all three in turn).
    client_cpu = dict.fromkeys(samples, 0.0)
    meters = {name: _Cpu(stack) for name, stack in stacks.items()}
    try:
        for client in clients.values():
            await client.ingest(DOCUMENTS)

        async def search(client: RaglineClient, i: int) -> None:
            await client.search(QUESTIONS[i % len(QUESTIONS)], top_k=3, cache_policy=BYPASS)

        async def ask(client: RaglineClient, i: int) -> None:
            await client.ask(QUESTIONS[i % len(QUESTIONS)], max_tokens=8, top_k=2, cache_policy=BYPASS)

        for client in clients.values():  # warm-up: connections, model caches, prepared statements
            await _timed(10, partial(search, client))
            await _timed(1, partial(ask, client))
        names = list(stacks)
        for _ in range(ROUNDS):
            for call, calls, make in (("search", SEARCHES_PER_ROUND, search), ("ask", ASKS_PER_ROUND, ask)):
                before = {name: meter.now() for name, meter in meters.items()}
                for i in range(calls):
                    # Call by call, each stack in turn, the first rotating: a drift of the machine's
                    # load hits all three alike, however short it is.
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        started, thread_started = time.perf_counter(), time.thread_time()
                        await make(clients[name], i)
                        samples[name, call].append(time.perf_counter() - started)
                        client_cpu[name, call] += time.thread_time() - thread_started
                for name, meter in meters.items():
                    after = meter.now()
                    for process, seconds in after.items():
                        cpu[name, call][process] = (
                            cpu[name, call].get(process, 0.0) + seconds - before[name][process]
                        )
        for key, seconds in client_cpu.items():
            cpu[key]["client"] = seconds
    finally:
        for client in clients.values():
            await client.close()
    rows = []
    for (name, call), values in samples.items():
        baseline = percentile(samples["off", call], 50)
        p50 = percentile(values, 50)
        cpu_ms = {
            process: seconds / len(values) * 1000 for process, seconds in sorted(cpu[name, call].items())
        }
        baseline_cpu = sum(cpu["off", call].values()) / len(samples["off", call]) * 1000
        rows.append(
            {
                "tracing": name,
                "call": call,
                "calls": len(values),
                "p50_ms": p50 * 1000,
                "p99_ms": percentile(values, 99) * 1000,
                "mean_ms": statistics.fmean(values) * 1000,
                "p50_cost_pct": (p50 / baseline - 1) * 100,
                **{f"cpu_{process}_ms": ms for process, ms in cpu_ms.items()},
                "cpu_total_ms": sum(cpu_ms.values()),
                "cpu_cost_pct": (sum(cpu_ms.values()) / baseline_cpu - 1) * 100,
            }
        )
    return rows


def main() -> None:
    """Starts the three stacks and the receiver, measures, prints the table and writes bench-results/tracing.json."""
    shutil.rmtree(STATE, ignore_errors=True)
    receiver = OtlpReceiver(keep=False)
    receiver.start()
    stacks: dict[str, Stack] = {}
    try:
        for name, otel in CONFIGURATIONS.items():
            env = {"REDIS_URL": "", "DATABASE_URL": "", **otel}
            if otel:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
            stacks[name] = Stack(state=STATE / name, free_ports=True, env=env)
            stacks[name].start()
        rows = asyncio.run(_bench(stacks))
        # The last batches are sent within the SDK's schedule delay (5 s by default).
        time.sleep(6)
    finally:
        for stack in stacks.values():
            stack.stop()
        receiver.stop()
    cost = {(row["tracing"], row["call"]): round(row["p50_cost_pct"], 2) for row in rows}
    cpu_cost = {(row["tracing"], row["call"]): round(row["cpu_cost_pct"], 2) for row in rows}
    write_report(
        "tracing",
        rows,
        {
            "search_p50_cost_pct_at_100pct": cost["on_100pct", "search"],
            "search_p50_cost_pct_at_10pct": cost["on_10pct", "search"],
            "ask_p50_cost_pct_at_100pct": cost["on_100pct", "ask"],
            "ask_p50_cost_pct_at_10pct": cost["on_10pct", "ask"],
            "search_cpu_cost_pct_at_100pct": cpu_cost["on_100pct", "search"],
            "search_cpu_cost_pct_at_10pct": cpu_cost["on_10pct", "search"],
            "ask_cpu_cost_pct_at_100pct": cpu_cost["on_100pct", "ask"],
            "ask_cpu_cost_pct_at_10pct": cpu_cost["on_10pct", "ask"],
            "spans_received": receiver.span_count,
            "otlp_bytes_received": receiver.bytes_received,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    main()
