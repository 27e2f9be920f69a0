"""`make bench` (memory): each service's peak resident memory under load, which sizes its Kubernetes pods.

Starts the four services as processes (`ragline.devstack`, embedded PostgreSQL and Valkey in a
temporary folder) and samples every service process's RSS every 50 ms while, through the gateway,
it ingests Cranfield abstracts, answers Searches from several clients at once, and Asks. The table
gives each service's RSS once started and its peak, next to the memory request and limit of its
Deployment in deploy/kubernetes/base (the README sizes the request at about 1.25 times the peak;
tests/test_kubernetes.py checks it is at least 1.2 times the peak the manifest quotes).

BENCH_MEMORY_DOCUMENTS (default 400), BENCH_MEMORY_SEARCHES (200) and BENCH_MEMORY_ASKS (2) set the load.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import beir
from benchmarks.report import write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import SERVICES, Stack

DOCUMENTS = int(os.environ.get("BENCH_MEMORY_DOCUMENTS", "400"))
SEARCHES = int(os.environ.get("BENCH_MEMORY_SEARCHES", "200"))
ASKS = int(os.environ.get("BENCH_MEMORY_ASKS", "2"))
# Asks queue at the one local model, and the machine is shared: the generate stage may wait minutes.
ENV = {
    "REDIS_URL": "",
    "DATABASE_URL": "",
    "GATEWAY_GENERATE_TIMEOUT_SECONDS": "900",
    "GENERATOR_REQUEST_TIMEOUT_SECONDS": "900",
}
CLIENTS = 4
COLLECTION = "memory"
SAMPLE_SECONDS = 0.05
MANIFESTS = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes" / "base"
MIB = 2**20


class PeakRss:
    """Samples the RSS of some processes in a thread and keeps each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.started = {name: p.memory_info().rss for name, p in self.processes.items()}
        self.peak = dict(self.started)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for name, process in self.processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _load(client: RaglineClient) -> tuple[dict[str, float], int]:
    """Ingest, concurrent Searches, then Asks; the seconds each phase took, and the Asks that failed."""
    seconds = {}
    started = time.perf_counter()
    documents = beir.load("cranfield").documents()[:DOCUMENTS]
    for start in range(0, len(documents), 50):
        batch = [DocumentToIngest(d.id, d.text.encode()) for d in documents[start : start + 50]]
        await client.ingest(batch, collection=COLLECTION, timeout=600)
    seconds["ingest"] = time.perf_counter() - started
    questions = list(beir.load("cranfield").queries().values())

    async def searches(worker: int) -> None:
        for i in range(worker, SEARCHES, CLIENTS):
            await client.search(questions[i % len(questions)], collection=COLLECTION, top_k=10)

    started = time.perf_counter()
    await asyncio.gather(*(searches(worker) for worker in range(CLIENTS)))
    seconds["search"] = time.perf_counter() - started
    started = time.perf_counter()
    asks = await asyncio.gather(
        *(client.ask(questions[i], collection=COLLECTION, max_tokens=32, timeout=900) for i in range(ASKS)),
        return_exceptions=True,
    )
    seconds["ask"] = time.perf_counter() - started
    # An Ask that timed out on a loaded machine still loaded the model and decoded: its memory counts.
    failed = sum(isinstance(ask, Exception) for ask in asks)
    return seconds, failed


def _deployment_memory(name: str) -> tuple[str, str]:
    """The memory request and limit of the service's Deployment in deploy/kubernetes/base."""
    text = (MANIFESTS / f"{name}.yaml").read_text()
    request, limit = re.findall(r"^\s+memory: (\S+)$", text, flags=re.MULTILINE)[:2]
    return request, limit


def main() -> None:
    """Runs the load, prints the table and writes bench-results/bench_memory.json."""
    with tempfile.TemporaryDirectory(prefix="ragline-bench-memory-") as state:
        stack = Stack(state=Path(state), free_ports=True, env=ENV)
        stack.start()
        try:
            pids = {}
            for spec in SERVICES:
                process = stack[spec.name].process
                assert process is not None
                pids[spec.name] = process.pid
            with PeakRss(pids) as rss:
                seconds, failed_asks = asyncio.run(_run(stack))
        finally:
            stack.stop()
    rows: list[dict[str, Any]] = []
    for spec in SERVICES:
        request, limit = _deployment_memory(spec.name)
        rows.append(
            {
                "service": spec.name,
                "started MiB": round(rss.started[spec.name] / MIB),
                "peak MiB": round(rss.peak[spec.name] / MIB),
                "k8s request": request,
                "k8s limit": limit,
            }
        )
    notes = {
        "load": f"{DOCUMENTS} Cranfield abstracts ingested, {SEARCHES} Searches from {CLIENTS} clients, "
        f"{ASKS} Asks at once (32 tokens)",
        **{f"{phase} seconds": round(value, 1) for phase, value in seconds.items()},
        "asks failed": failed_asks,
        "sampling": f"RSS of each service process every {SAMPLE_SECONDS * 1000:.0f} ms",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    write_report("bench_memory", rows, notes)


async def _run(stack: Stack) -> tuple[dict[str, float], int]:
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        return await _load(client)


if __name__ == "__main__":
    main()
