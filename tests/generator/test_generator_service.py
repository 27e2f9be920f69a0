"""The generator over gRPC, as a real process running the bundled SmolLM2 model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

import grpc
import pytest

from ragline.devstack import ServiceProcess
from ragline.v1 import common_pb2, generator_service_pb2, generator_service_pb2_grpc

pytestmark = pytest.mark.integration

PASSAGES = [
    common_pb2.Passage(
        document_id="landmarks.md",
        chunk_id="paris-1",
        text="The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was completed in 1889.",
        score=0.92,
    ),
    common_pb2.Passage(
        document_id="fruit.md",
        chunk_id="banana-1",
        text="Bananas are long curved fruits with yellow skin. They are rich in potassium.",
        score=0.41,
    ),
    common_pb2.Passage(
        document_id="physics.md",
        chunk_id="water-1",
        text="At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
        score=0.38,
    ),
]
GREEDY = common_pb2.GenerationOptions(temperature=0, max_tokens=64)
# A prompt that makes the model write for a long time, for cancellation and queueing.
LONG = generator_service_pb2.GenerateStreamRequest(
    question="Tell me everything about the Eiffel Tower, its history and its construction, in great detail.",
    passages=PASSAGES,
    options=common_pb2.GenerationOptions(temperature=1.0, max_tokens=1000),
)


def stub(address: str) -> tuple[grpc.aio.Channel, generator_service_pb2_grpc.GeneratorServiceStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, generator_service_pb2_grpc.GeneratorServiceStub(channel)


async def test_generate_answers_from_the_passages_with_a_valid_citation(generator: ServiceProcess) -> None:
    channel, client = stub(generator.address)
    async with channel:
        reply = await client.Generate(
            generator_service_pb2.GenerateRequest(
                question="Where is the Eiffel Tower?", passages=PASSAGES, options=GREEDY
            ),
            timeout=60,
        )
    assert "Paris" in reply.text
    # The citation grammar makes every sentence end with a marker of a given passage.
    assert reply.citations, reply.text
    by_chunk = {p.chunk_id: p for p in PASSAGES}
    for citation in reply.citations:
        passage = by_chunk[citation.chunk_id]
        assert PASSAGES[citation.number - 1] == passage
        assert citation.document_id == passage.document_id and passage.text.startswith(citation.snippet)
    assert reply.passages_used == 3
    assert reply.model == "SmolLM2-135M-Instruct.Q4_1"
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert reply.usage.prompt_tokens > 100 and 0 < reply.usage.completion_tokens <= 64


@pytest.mark.xfail(
    reason="SmolLM2-135M cites the last passage whatever the question (measured: right 4/12, README)",
    strict=False,
)
async def test_generate_cites_the_passage_that_answers_the_question(generator: ServiceProcess) -> None:
    channel, client = stub(generator.address)
    async with channel:
        reply = await client.Generate(
            generator_service_pb2.GenerateRequest(
                question="Where is the Eiffel Tower?", passages=PASSAGES, options=GREEDY
            ),
            timeout=60,
        )
    assert [c.chunk_id for c in reply.citations] == ["paris-1"], reply.text


async def test_generate_stream_sends_deltas_then_one_final(generator: ServiceProcess) -> None:
    channel, client = stub(generator.address)
    async with channel:
        events = [
            event
            async for event in client.GenerateStream(
                generator_service_pb2.GenerateStreamRequest(
                    question="At what temperature does water boil?", passages=PASSAGES, options=GREEDY
                ),
                timeout=60,
            )
        ]
    deltas = [e.delta for e in events if e.WhichOneof("event") == "delta"]
    assert deltas and all(e.WhichOneof("event") == "delta" for e in events[:-1])
    final = events[-1].final
    assert events[-1].WhichOneof("event") == "final"
    assert final.text == "".join(deltas) and final.text.strip()
    assert final.model and final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert final.citations and all(1 <= c.number <= 3 for c in final.citations), final.text


async def test_no_passages_answers_dont_know_without_the_model(generator: ServiceProcess) -> None:
    channel, client = stub(generator.address)
    async with channel:
        reply = await client.Generate(
            generator_service_pb2.GenerateRequest(question="Where is the Eiffel Tower?"), timeout=10
        )
    assert reply.text == "I don't know."
    assert reply.finish_reason == common_pb2.FINISH_REASON_NO_CONTEXT
    assert not reply.citations and reply.usage.completion_tokens == 0 and reply.passages_used == 0


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (generator_service_pb2.GenerateRequest(question="  \n", passages=PASSAGES), "question"),
        (
            generator_service_pb2.GenerateRequest(
                question="Q?", passages=PASSAGES, options=common_pb2.GenerationOptions(max_tokens=1025)
            ),
            "options.max_tokens",
        ),
        (
            generator_service_pb2.GenerateRequest(
                question="Q?", passages=PASSAGES, options=common_pb2.GenerationOptions(max_tokens=-1)
            ),
            "options.max_tokens",
        ),
        (
            generator_service_pb2.GenerateRequest(
                question="Q?", passages=PASSAGES, options=common_pb2.GenerationOptions(temperature=2.5)
            ),
            "options.temperature",
        ),
        (
            generator_service_pb2.GenerateRequest(question="word " * 3000, passages=PASSAGES),
            "question",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    generator: ServiceProcess, request_: generator_service_pb2.GenerateRequest, field: str
) -> None:
    channel, client = stub(generator.address)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.Generate(request_, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field.split(".")[-1] in (caught.value.details() or "")


def finished_answers(service: ServiceProcess) -> float:
    """The service's ragline_generator_finish_total summed over reasons."""
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return sum(
        float(line.split()[-1]) for line in lines if line.startswith("ragline_generator_finish_total{")
    )


async def test_a_cancelled_stream_frees_the_model_for_the_next_call(generator: ServiceProcess) -> None:
    finished_before = finished_answers(generator)
    channel, client = stub(generator.address)
    async with channel:
        call = client.GenerateStream(LONG, timeout=120)
        first = await call.read()
        assert first.WhichOneof("event") == "delta"
        call.cancel()
        started = time.monotonic()
        reply = await client.Generate(
            generator_service_pb2.GenerateRequest(
                question="Where is the Eiffel Tower?",
                passages=PASSAGES,
                options=common_pb2.GenerationOptions(temperature=0, max_tokens=16),
            ),
            timeout=30,
        )
        elapsed = time.monotonic() - started
    assert reply.text
    assert elapsed < 10, elapsed
    # The next call waited for the model, so the long answer was over by then: stopped, not finished.
    assert finished_answers(generator) == finished_before + 1


async def test_a_full_queue_refuses_at_once_with_resource_exhausted(
    start_generator: Callable[[dict[str, str]], str],
) -> None:
    channel, client = stub(start_generator({"GENERATOR_MAX_QUEUE": "1"}))
    async with channel:

        async def call() -> tuple[grpc.StatusCode, float]:
            started = time.monotonic()
            try:
                async for _ in client.GenerateStream(LONG, timeout=5):
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc.code(), time.monotonic() - started
            return grpc.StatusCode.OK, time.monotonic() - started

        results = await asyncio.gather(*(call() for _ in range(4)))
    # One runs, one waits, the other two are refused at once.
    refused = [elapsed for code, elapsed in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(refused) == 2, results
    assert max(refused) < 1, results


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENERATOR_BACKEND": "openai"}, "not implemented yet"),
        ({"GENERATOR_MAX_QUEUE": "-1"}, "GENERATOR_MAX_QUEUE='-1': must be at least 0"),
        ({"GENERATOR_MAX_TOKENS_LIMIT": "4096"}, "must be less than GENERATOR_CONTEXT_WINDOW"),
        ({"GENERATOR_MODEL_PATH": "/nonexistent.gguf"}, "no model file at /nonexistent.gguf"),
    ],
)
def test_bad_configuration_stops_the_service_with_exit_code_2(env: dict[str, str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ragline_generator"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
