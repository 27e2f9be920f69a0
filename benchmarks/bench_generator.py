"""Time to first token and decoding speed of the local generator backend, with a 5-passage prompt.

Measured two ways side by side: in-process (the backend's stream, what the model costs) and
through the real service over gRPC (what a caller sees: prompt building, the worker thread
hand-off, serialization and the network hop on top). Each run asks a different question over a
different set of 5 passages, so llama.cpp can reuse only the cached instruction and example,
as for real traffic. With and without the citation grammar, which is checked on every sampled
token. Run by `make bench` as `python -m benchmarks.bench_generator`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from benchmarks.generator_citations import FACTS
from benchmarks.report import percentile, write_report
from ragline.config import load_config
from ragline.devstack import Stack
from ragline.v1 import common_pb2, generator_service_pb2, generator_service_pb2_grpc
from ragline_generator.backends import Finish, Generation, LocalBackend
from ragline_generator.config import GeneratorConfig
from ragline_generator.prompt import build_prompt, load_template

PASSAGES = 5
RUNS = 6
MAX_TOKENS = 64


def question(run: int) -> tuple[str, list[str]]:
    """Run `run`'s question and its 5 passages, the answering one first."""
    ids = [(run + k) % len(FACTS) for k in range(PASSAGES)]
    return FACTS[ids[0]][1], [FACTS[i][0] for i in ids]


class Timing:
    """One answer's time to first token, decoding speed and size."""

    def __init__(self, started: float, first: float, done: float, prompt_tokens: int, tokens: int) -> None:
        self.ttft = first - started
        self.tokens_per_second = (tokens - 1) / (done - first) if tokens > 1 and done > first else 0.0
        self.prompt_tokens = prompt_tokens
        self.tokens = tokens


async def timed(events: AsyncIterator[str | tuple[int, int]]) -> Timing:
    """Times a stream of text deltas that ends with (prompt tokens, completion tokens)."""
    started = time.perf_counter()
    first = 0.0
    counts = (0, 0)
    async for event in events:
        if isinstance(event, tuple):
            counts = event
        elif not first:
            first = time.perf_counter()
    return Timing(started, first, time.perf_counter(), *counts)


async def in_process(grammar: bool) -> list[Timing]:
    config = load_config(
        GeneratorConfig,
        environ={"GENERATOR_CITATION_GRAMMAR": str(grammar).lower(), "GENERATOR_THREADS": "2"},
    )
    backend = LocalBackend(config)
    await backend.start()
    template = load_template()

    async def events(run: int) -> AsyncIterator[str | tuple[int, int]]:
        text, passages = question(run)
        prompt = build_prompt(
            text,
            passages,
            template=template,
            order="best_last",
            count_tokens=backend.count_tokens,
            context_window=config.context_window,
            max_tokens=MAX_TOKENS,
            dont_know=config.dont_know,
        )
        generation = Generation(
            prompt.messages, max_tokens=MAX_TOKENS, temperature=0, passages=prompt.passages_used
        )
        stream = backend.stream(generation, timeout=120)
        async for event in stream:
            if isinstance(event, Finish):
                yield event.prompt_tokens or prompt.tokens, event.completion_tokens
            else:
                yield event

    try:
        await timed(events(-1))  # Warm-up: loads the instruction and example into llama.cpp's cache.
        return [await timed(events(run)) for run in range(RUNS)]
    finally:
        await backend.close()


async def over_grpc(address: str) -> list[Timing]:
    async with grpc.aio.insecure_channel(address) as channel:
        client = generator_service_pb2_grpc.GeneratorServiceStub(channel)

        async def events(run: int) -> AsyncIterator[str | tuple[int, int]]:
            text, passages = question(run)
            request = generator_service_pb2.GenerateStreamRequest(
                question=text,
                passages=[
                    common_pb2.Passage(document_id=f"d{i}", chunk_id=f"c{i}", text=t)
                    for i, t in enumerate(passages)
                ],
                options=common_pb2.GenerationOptions(temperature=0, max_tokens=MAX_TOKENS),
            )
            async for event in client.GenerateStream(request, timeout=120):
                if event.WhichOneof("event") == "delta":
                    yield event.delta
                else:
                    yield event.final.usage.prompt_tokens, event.final.usage.completion_tokens

        await timed(events(-1))
        return [await timed(events(run)) for run in range(RUNS)]


def row(path: str, grammar: bool, timings: list[Timing]) -> dict[str, object]:
    ttft = [t.ttft for t in timings]
    speed = [t.tokens_per_second for t in timings]
    return {
        "path": path,
        "grammar": grammar,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_max_s": max(ttft),
        "tokens_per_s_p50": percentile(speed, 50),
        "tokens_per_s_min": min(speed),
        "prompt_tokens": round(statistics.mean(t.prompt_tokens for t in timings)),
        "answer_tokens_p50": percentile([float(t.tokens) for t in timings], 50),
    }


def main() -> None:
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragline-bench-generator-") as state:
        for grammar in (False, True):
            rows.append(row("in-process", grammar, asyncio.run(in_process(grammar))))
            env = {"GENERATOR_CITATION_GRAMMAR": str(grammar).lower(), "GENERATOR_THREADS": "2"}
            stack = Stack(state=Path(state) / str(grammar), services=("generator",), free_ports=True, env=env)
            stack.start(timeout=120)
            try:
                rows.append(row("grpc", grammar, asyncio.run(over_grpc(stack["generator"].address))))
            finally:
                stack.stop()
    write_report(
        "generator",
        rows,
        {
            "model": "bundled SmolLM2-135M-Instruct Q4_1, llama.cpp, 2 threads, context 2048",
            "prompt": f"{PASSAGES} passages, best_last layout, temperature 0, max_tokens {MAX_TOKENS}",
            "runs": f"{RUNS} per row after one warm-up, each with different passages and question",
            "seconds": round(time.monotonic() - started),
        },
    )


if __name__ == "__main__":
    main()
