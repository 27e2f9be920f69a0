"""The openai backend, as a real generator process calling llama.cpp's OpenAI-compatible server.

The server is `python -m llama_cpp.server` serving the bundled SmolLM2 on loopback; a relay in
front of it (generator_loopback.py) injects 429s, 5xxs and dropped connections. The openai SDK
is used unmodified over real HTTP.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from generator_helpers import GREEDY, LONG, OPENAI_MODEL, PASSAGES, stub
from generator_loopback import Failure, Relay
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ragline.devstack import ServiceProcess
from ragline.v1 import common_pb2, generator_service_pb2

pytestmark = pytest.mark.integration


def ask(question: str, max_tokens: int = 16) -> generator_service_pb2.GenerateRequest:
    return generator_service_pb2.GenerateRequest(
        question=question,
        passages=PASSAGES,
        options=common_pb2.GenerationOptions(temperature=0, max_tokens=max_tokens),
    )


async def test_generate_answers_through_the_api_with_resolvable_citations(
    openai_generator: ServiceProcess, healthy_relay: Relay
) -> None:
    channel, client = stub(openai_generator.address)
    async with channel:
        reply = await client.Generate(ask("In which city is the Eiffel Tower?"), timeout=60)
    assert reply.text.strip()
    assert reply.model == OPENAI_MODEL
    assert reply.passages_used == 3
    assert reply.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    # Without a grammar the model may or may not cite; whatever it cites must resolve to a given passage.
    by_chunk = {p.chunk_id: p for p in PASSAGES}
    assert all(by_chunk[c.chunk_id].document_id == c.document_id for c in reply.citations)
    assert healthy_relay.requests == 1


async def test_usage_counts_the_prompt_and_every_streamed_token(
    openai_generator: ServiceProcess, healthy_relay: Relay
) -> None:
    channel, client = stub(openai_generator.address)
    async with channel:
        reply = await client.Generate(ask(LONG.question, max_tokens=8), timeout=60)
    assert reply.finish_reason == common_pb2.FINISH_REASON_LENGTH
    # llama.cpp's server sends no usage while streaming; then each streamed piece is one token.
    assert reply.usage.completion_tokens == 8
    assert 150 < reply.usage.prompt_tokens < 400, reply.usage
    labels = {"model": OPENAI_MODEL, "kind": "completion"}
    assert openai_generator.metric("ragline_generator_tokens_total", labels) >= 8


async def test_generate_stream_sends_deltas_then_one_final(
    openai_generator: ServiceProcess, healthy_relay: Relay
) -> None:
    channel, client = stub(openai_generator.address)
    request = generator_service_pb2.GenerateStreamRequest(
        question="At what temperature does water boil?", passages=PASSAGES, options=GREEDY
    )
    async with channel:
        events = [event async for event in client.GenerateStream(request, timeout=60)]
    deltas = [e.delta for e in events[:-1]]
    assert len(deltas) > 1 and all(e.WhichOneof("event") == "delta" for e in events[:-1])
    final = events[-1].final
    assert final.text == "".join(deltas)
    # One delta per token, except that a period is held back until the next token shows whether it
    # ends a sentence (a citation may go before it) or is a decimal point, and then goes with it.
    assert len(deltas) <= final.usage.completion_tokens <= 2 * len(deltas)


async def test_a_cancelled_stream_closes_the_request_to_the_api(
    openai_generator: ServiceProcess, healthy_relay: Relay
) -> None:
    channel, client = stub(openai_generator.address)
    async with channel:
        call = client.GenerateStream(LONG, timeout=60)
        assert (await call.read()).WhichOneof("event") == "delta"
        call.cancel()
        # The generator closes its HTTP response, which tells the server to stop generating.
        await asyncio.wait_for(healthy_relay.closed_by_client.wait(), timeout=5)
        reply = await client.Generate(ask("Where is the Eiffel Tower?", max_tokens=8), timeout=30)
    assert reply.text


async def test_a_429_is_retried_after_the_servers_retry_after(
    openai_generator: ServiceProcess, healthy_relay: Relay
) -> None:
    healthy_relay.failure = Failure(1, 429, {"Retry-After": "0.5"})
    before = openai_generator.metric("ragline_generator_upstream_retries_total", {"status": "429"})
    channel, client = stub(openai_generator.address)
    started = time.monotonic()
    async with channel:
        reply = await client.Generate(ask("Where is the Eiffel Tower?", max_tokens=8), timeout=30)
    assert reply.text and time.monotonic() - started >= 0.5
    assert healthy_relay.requests == 2
    after = openai_generator.metric("ragline_generator_upstream_retries_total", {"status": "429"})
    assert after == before + 1


@pytest.mark.parametrize(
    ("failure", "code", "delay"),
    [
        (Failure(10, 429, {"Retry-After": "0.25"}), grpc.StatusCode.RESOURCE_EXHAUSTED, 0.25),
        (Failure(10, 503, {"retry-after-ms": "200"}), grpc.StatusCode.UNAVAILABLE, 0.2),
        (Failure(10, 0), grpc.StatusCode.UNAVAILABLE, None),
    ],
    ids=["429", "503", "dropped-connection"],
)
async def test_spent_retries_answer_with_a_status_and_retry_info(
    openai_generator: ServiceProcess,
    healthy_relay: Relay,
    failure: Failure,
    code: grpc.StatusCode,
    delay: float | None,
) -> None:
    healthy_relay.failure = failure
    channel, client = stub(openai_generator.address)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.Generate(ask("Where is the Eiffel Tower?"), timeout=30)
    assert caught.value.code() == code, caught.value.details()
    # GENERATOR_OPENAI_MAX_RETRIES=2: the first try and two retries.
    assert healthy_relay.requests == 3
    status = rpc_status.from_call(caught.value)
    assert status is not None
    retry_info = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry_info) for detail in status.details)
    seconds = retry_info.retry_delay.ToNanoseconds() / 1e9
    if delay is not None:
        assert seconds == pytest.approx(delay)
    else:
        assert 0 <= seconds <= 2
    errors = openai_generator.metric("ragline_generator_errors_total", {"code": code.name})
    assert errors >= 1
