"""Embedder throughput and latency: the runtimes side by side, and the raw model against the service under load.

`python -m benchmarks.bench_embedder` (run by `make bench`). Machines here are shared and
noisy, so every comparison is made within one run, alternating what is compared over
`BENCH_EMBEDDER_ROUNDS` rounds (default 3), and reported as medians and ratios:

1. **Runtimes** (`bench-results/embedder_runtimes.json`), each in a process of its own: torch
   (sentence-transformers), onnxruntime fp32 (the service's default) and onnxruntime int8
   (dynamic per-channel quantisation of the MatMuls), each with the service's forward-pass
   limits for it: passages/s, the median of the per-round ratios to torch, single-query
   latency, and the lowest cosine of their vectors to torch's. `BENCH_EMBEDDER_RUNTIMES=0`
   skips this part.
2. **Service** (`bench-results/embedder.json`): the real service process over gRPC with 1, 4
   and 16 concurrent clients, each sending requests of 8 passages, against the raw model (the
   service's runtime called directly in this process, with the service's forward-pass limits)
   measured right before each run; then 16 clients again while one more client embeds a query
   every 20 ms, for query latency (p50, p99) under that load (queries pre-empt passages, so
   that run's passages/s is lower by the model time the queries take); query latency idle;
   the speed-up when every passage is already in the Redis cache.

Passages are Cranfield abstracts from `../shared/data/cranfield/corpus.jsonl` (or
`$RAGLINE_SHARED_DIR/data/cranfield`), `BENCH_EMBEDDER_PASSAGES` of them (default 96). The
cache is on (embedded Valkey) and emptied before each throughput run, so those pay the cache
round trips but never hit it. The ONNX graph is exported once into `.ragline/embedder-onnx`
and reused by later runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import redis
from numpy.typing import NDArray

from benchmarks import beir
from benchmarks.report import percentile, write_report
from ragline.config import load_config, state_dir
from ragline.devstack import Stack
from ragline.embedded_redis import EmbeddedRedis
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline_embedder.backends import EmbeddingBackend, Prefixes, local_model, threads_available
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import load_local_backend

PASSAGES = int(os.environ.get("BENCH_EMBEDDER_PASSAGES", "96"))
ROUNDS = int(os.environ.get("BENCH_EMBEDDER_ROUNDS", "3"))
COMPARE_RUNTIMES = os.environ.get("BENCH_EMBEDDER_RUNTIMES", "1") != "0"
REQUEST_SIZE = 8
CLIENTS = (1, 4, 16)
QUERIES = [
    "what is the lift of a swept wing at low speed?",
    "heat transfer in hypersonic flow",
    "buckling of shells",
]
ONNX_CACHE = state_dir() / "embedder-onnx"


def load_passages() -> list[str]:
    """The first abstracts of the Cranfield collection, title first (the tokenizer reads the blank
    line between them as any other whitespace)."""
    return [document.text for document in beir.load("cranfield").documents()[:PASSAGES]]


def bench_config(**environ: str) -> EmbedderConfig:
    """The service's default settings, with the ONNX cache kept across benchmark runs."""
    return load_config(EmbedderConfig, environ={"EMBEDDER_ONNX_CACHE_DIR": str(ONNX_CACHE), **environ})


def rate(backend: EmbeddingBackend, passages: list[str]) -> float:
    """Passages/s of one `encode` of all the passages (forward passes of 32, grouped by length)."""
    started = time.perf_counter()
    backend.encode(passages)
    return len(passages) / (time.perf_counter() - started)


def raw_model_rate(passages: list[str]) -> float:
    """Passages/s of the service's default local model called directly in this process (used by bench_ingest)."""
    backend = load_local_backend(bench_config())
    backend.encode(passages[:32])  # warm-up
    return rate(backend, passages)


def quantize_int8(folder: Path) -> Path:
    """The service's ONNX graph quantised to int8 (weights per channel, MatMul only), written into `folder`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ragline_embedder.onnx_backend import cache_root, exported_graph

    config = bench_config()
    path, name = local_model(config)
    quantized = folder / "model-int8.onnx"
    logging.disable(logging.WARNING)  # its advice to pre-process the graph first, on the root logger
    try:
        quantize_dynamic(
            exported_graph(path, name, cache_root(config)),
            quantized,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
        )
    finally:
        logging.disable(logging.NOTSET)
    return quantized


def _load_runtime(runtime: str, int8_graph: Path) -> EmbeddingBackend:
    """One runtime with the service's default settings for it."""
    if runtime == "torch":
        return load_local_backend(bench_config(EMBEDDER_LOCAL_RUNTIME="torch"))
    if runtime == "onnxruntime fp32":
        return load_local_backend(bench_config())
    import onnxruntime

    from ragline_embedder.onnx_backend import (
        OnnxBackend,
        load_tokenizer,
        max_sequence_length,
        session_options,
    )

    config = bench_config()
    path, name = local_model(config)
    session = onnxruntime.InferenceSession(
        str(int8_graph),
        session_options(threads_available(config.threads)),
        providers=["CPUExecutionProvider"],
    )
    return OnnxBackend(
        session,
        load_tokenizer(path),
        model_name=name,
        max_tokens=max_sequence_length(path),
        prefixes=Prefixes(),
        batch_size=config.batch_size,
        batch_tokens=config.model_batch_tokens(),
    )


_worker_backend: EmbeddingBackend | None = None


def runtime_round(
    runtime: str, int8_graph: Path, passages: list[str], queries: list[str]
) -> tuple[float, list[float], NDArray[np.float32]]:
    """In a runtime's own worker process: passages/s, single-query latencies (`encode_queries`, the
    service's path for queries), and the vectors."""
    global _worker_backend
    if _worker_backend is None:
        _worker_backend = _load_runtime(runtime, int8_graph)
        _worker_backend.encode(passages[:32])  # warm-up
    backend = _worker_backend
    passages_per_s = rate(backend, passages)
    latencies = []
    for query in queries:
        started = time.perf_counter()
        backend.encode_queries([query])
        latencies.append(time.perf_counter() - started)
    return passages_per_s, latencies, backend.encode(passages + queries)


def compare_runtimes(passages: list[str]) -> list[dict[str, object]]:
    """torch, onnxruntime fp32 and int8, each in a process of its own, taking turns over the rounds.

    Separate processes, so that one runtime's idle threads never share a process (or its
    memory allocator) with another's measurement; each waits while another measures.
    """
    from benchmarks import bench_embedder as this  # by its importable name, for the workers

    runtimes = ("torch", "onnxruntime fp32", "onnxruntime int8")
    queries = [f"{QUERIES[i % 3]} ({i})" for i in range(30)]
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    latencies: dict[str, list[float]] = {name: [] for name in runtimes}
    vectors: dict[str, NDArray[np.float32]] = {}
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="bench-embedder-int8-") as folder,
        contextlib.ExitStack() as stack,
    ):
        int8_graph = quantize_int8(Path(folder))
        workers = {
            name: stack.enter_context(ProcessPoolExecutor(max_workers=1, mp_context=spawn))
            for name in runtimes
        }
        for _ in range(ROUNDS):
            for name in runtimes:
                passages_per_s, seconds, vectors[name] = (
                    workers[name].submit(this.runtime_round, name, int8_graph, passages, queries).result()
                )
                rates[name].append(passages_per_s)
                latencies[name] += seconds
                time.sleep(0.5)  # lets the threads of the runtime that just ran go idle
    rows: list[dict[str, object]] = []
    for name in runtimes:
        rows.append(
            {
                "runtime": name,
                "passages_per_s": statistics.median(rates[name]),
                "vs_torch": _median_ratio(rates[name], rates["torch"]),
                "query_p50_ms": percentile(latencies[name], 50) * 1000,
                "query_p99_ms": percentile(latencies[name], 99) * 1000,
                "min_cosine_to_torch": float(np.min(np.sum(vectors[name] * vectors["torch"], axis=1))),
            }
        )
    return rows


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
            text = f"{query} ({clients} clients, {time.time()}, {number})"
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


async def idle_query_latencies(stub: EmbedderServiceStub, count: int = 30) -> list[float]:
    """Latency of one query at a time on an otherwise idle service (unique texts: no cache hits)."""
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        text = f"{QUERIES[i % 3]} ({time.time()}, {i})"
        await stub.Embed(pb.EmbedRequest(texts=[text], input_type=pb.INPUT_TYPE_QUERY), timeout=60)
        latencies.append(time.perf_counter() - started)
    return latencies


def _median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


async def measure_service(
    address: str, cache: redis.Redis, passages: list[str], raw_backend: EmbeddingBackend
) -> tuple[list[dict[str, object]], dict[str, object]]:
    """Rounds of: the raw model in-process, idle queries, then 1, 4 and 16 clients through the service."""
    runs = [(clients, False) for clients in CLIENTS] + [(CLIENTS[-1], True)]
    rates: dict[tuple[int, bool], list[float]] = {run: [] for run in runs}
    raw: dict[tuple[int, bool], list[float]] = {run: [] for run in runs}
    idle: list[float] = []
    loaded: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = EmbedderServiceStub(channel)
        await service_run(stub, passages[:64], 4, measure_queries=False)  # warm-up
        raw_backend.encode(passages[:32])
        for _ in range(ROUNDS):
            idle += await idle_query_latencies(stub)
            for clients, with_queries in runs:
                # The raw model right before each service run: the ratio compares neighbours in time.
                raw[clients, with_queries].append(rate(raw_backend, passages))
                cache.flushdb()
                passages_per_s, latencies = await service_run(stub, passages, clients, with_queries)
                rates[clients, with_queries].append(passages_per_s)
                loaded += latencies
        # The last run left every passage in the cache: the same run again is all hits.
        cached_rate, _ = await service_run(stub, passages, CLIENTS[-1], measure_queries=False)
    rows: list[dict[str, object]] = []
    for clients, with_queries in runs:
        measured = rates[clients, with_queries]
        row: dict[str, object] = {
            "clients": f"{clients} + queries" if with_queries else str(clients),
            "passages_per_s": statistics.median(measured),
            "ratio_to_raw": _median_ratio(measured, raw[clients, with_queries]),
            "ratios": " ".join(
                f"{r / w:.2f}" for r, w in zip(measured, raw[clients, with_queries], strict=True)
            ),
        }
        if with_queries:
            row["query_p50_ms"] = percentile(loaded, 50) * 1000
            row["query_p99_ms"] = percentile(loaded, 99) * 1000
            row["queries"] = len(loaded)
        rows.append(row)
    notes: dict[str, object] = {
        "raw_model_passages_per_s": statistics.median(r for rs in raw.values() for r in rs),
        "idle_query_p50_ms": percentile(idle, 50) * 1000,
        "idle_query_p99_ms": percentile(idle, 99) * 1000,
        "cache_hit_passages_per_s": cached_rate,
        "cache_hit_speedup": cached_rate / statistics.median(rates[CLIENTS[-1], False]),
    }
    return rows, notes


def main() -> None:
    """Runs the benchmark and writes bench-results/embedder_runtimes.json and bench-results/embedder.json."""
    passages = load_passages()
    config = bench_config(**{k: v for k, v in os.environ.items() if k.startswith("EMBEDDER_")})
    if COMPARE_RUNTIMES:
        write_report(
            "embedder_runtimes",
            compare_runtimes(passages),
            {"passages": len(passages), "rounds": ROUNDS, "threads": threads_available(config.threads)},
        )
    raw_backend = load_local_backend(config)
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as state:
        valkey = EmbeddedRedis(Path(state) / "valkey")
        url = valkey.start()
        env = {"REDIS_URL": url, "EMBEDDER_ONNX_CACHE_DIR": str(ONNX_CACHE)}
        stack = Stack(state=Path(state), services=("embedder",), free_ports=True, env=env)
        try:
            stack.start()
            cache = redis.Redis.from_url(url)
            try:
                rows, notes = asyncio.run(
                    measure_service(stack["embedder"].address, cache, passages, raw_backend)
                )
            except grpc.RpcError:
                print(stack["embedder"].log_tail())
                raise
        finally:
            stack.stop()
            valkey.stop()
    notes = {
        "runtime": config.local_runtime,
        "threads": threads_available(config.threads),
        "batch_tokens": config.model_batch_tokens(),
        "batch_size": config.batch_size,
        "passages": len(passages),
        "request_size": REQUEST_SIZE,
        "rounds": ROUNDS,
        **notes,
    }
    write_report("embedder", rows, notes)


if __name__ == "__main__":
    main()
