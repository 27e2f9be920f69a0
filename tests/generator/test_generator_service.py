"""The generator over gRPC, as a real process running the bundled SmolLM2 model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
import pytest
from generator_helpers import GREEDY, LONG, PASSAGES, stub

from ragline.devstack import ServiceProcess
from ragline.v1 import common_pb2, generator_service_pb2

pytestmark = pytest.mark.integration


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
        # The best passage is listed last, so [n] is the (4 - n)-th best.
        assert PASSAGES[3 - citation.number] == passage
        assert citation.document_id == passage.document_id and passage.text.startswith(citation.snippet)
    assert reply.passages_used == 3
    assert reply.model == "SmolLM2-135M-Instruct.Q4_1"
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert reply.usage.prompt_tokens > 100 and 0 < reply.usage.completion_tokens <= 64


@pytest.mark.parametrize(
    ("question", "passages", "chunk_id"),
    [
        ("In which city is the Eiffel Tower?", PASSAGES, "paris-1"),
        ("At what temperature does water boil?", [PASSAGES[2], PASSAGES[0], PASSAGES[1]], "water-1"),
        ("Which mineral are bananas rich in?", [PASSAGES[1], PASSAGES[2], PASSAGES[0]], "banana-1"),
    ],
    ids=["eiffel", "water", "bananas"],
)
async def test_generate_cites_the_best_ranked_passage_when_it_answers(
    generator: ServiceProcess, question: str, passages: list[common_pb2.Passage], chunk_id: str
) -> None:
    # The realistic case: retrieval ranked the answering passage first. The default layout
    # (GENERATOR_PASSAGE_ORDER=best_last) lists it last, where SmolLM2 looks; see the README.
    channel, client = stub(generator.address)
    async with channel:
        reply = await client.Generate(
            generator_service_pb2.GenerateRequest(question=question, passages=passages, options=GREEDY),
            timeout=60,
        )
    # The answering sentence cites the right passage first; a small model may add a sentence about
    # another passage, which is then cited as the passage it came from.
    assert reply.citations[0].chunk_id == chunk_id, reply.text
    # Listed worst first and numbered as listed, the best of three passages is [3].
    assert reply.citations[0].number == 3 and "[3]" in reply.text


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


async def test_a_cancelled_stream_frees_the_model_for_the_next_call(generator: ServiceProcess) -> None:
    finished_before = generator.metric("ragline_generator_finish_total")
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
    assert generator.metric("ragline_generator_finish_total") == finished_before + 1


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
        (
            {"GENERATOR_BACKEND": "openai", "OPENAI_API_KEY": ""},
            "GENERATOR_BACKEND=openai needs GENERATOR_OPENAI_API_KEY",
        ),
        ({"GENERATOR_PASSAGE_ORDER": "random"}, "GENERATOR_PASSAGE_ORDER"),
        ({"GENERATOR_PROMPT_TEMPLATE": "/nonexistent.toml"}, "GENERATOR_PROMPT_TEMPLATE='/nonexistent.toml'"),
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


async def test_metrics_time_count_and_classify_answers_without_logging_questions(
    generator: ServiceProcess,
) -> None:
    question = "Which secret landmark question should never reach the logs?"
    channel, client = stub(generator.address)
    async with channel:
        await client.Generate(
            generator_service_pb2.GenerateRequest(
                question=question, passages=PASSAGES, options=common_pb2.GenerationOptions(max_tokens=8)
            ),
            timeout=60,
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await client.Generate(
                generator_service_pb2.GenerateRequest(question=" ", passages=PASSAGES), timeout=10
            )
    model = {"model": "SmolLM2-135M-Instruct.Q4_1"}
    for name in (
        "ragline_generator_request_duration_seconds_count",
        "ragline_generator_time_to_first_token_seconds_count",
        "ragline_generator_token_interval_seconds_count",
    ):
        assert generator.metric(name, model) >= 1, name
    assert generator.metric("ragline_generator_tokens_total", {**model, "kind": "prompt"}) > 100
    assert generator.metric("ragline_generator_errors_total", {"code": "INVALID_ARGUMENT"}) >= 1
    assert "secret landmark" not in generator.log_tail(1_000_000)


async def test_the_dont_know_wording_is_configurable(
    start_generator: Callable[[dict[str, str]], str],
) -> None:
    channel, client = stub(start_generator({"GENERATOR_DONT_KNOW": "The documents do not say."}))
    async with channel:
        reply = await client.Generate(generator_service_pb2.GenerateRequest(question="Why?"), timeout=10)
    assert reply.text == "The documents do not say."
    assert reply.finish_reason == common_pb2.FINISH_REASON_NO_CONTEXT


async def test_a_generation_past_its_timeout_stops_with_deadline_exceeded(
    start_generator: Callable[[dict[str, str]], str],
) -> None:
    # Without the grammar (which stops an answer after three sentences) LONG runs to max_tokens.
    channel, client = stub(
        start_generator({"GENERATOR_REQUEST_TIMEOUT_SECONDS": "3", "GENERATOR_CITATION_GRAMMAR": "false"})
    )
    async with channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in client.GenerateStream(LONG, timeout=60):
                pass
    # The server's own limit, not the caller's 60 s deadline, ended the call (freeing the model takes
    # the same path as a cancelled call, tested above).
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "GENERATOR_REQUEST_TIMEOUT_SECONDS" in (caught.value.details() or "")
    assert time.monotonic() - started < 15
