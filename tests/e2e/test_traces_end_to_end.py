"""One question is one trace (#17): the four services export to a real OTLP/gRPC receiver and the spans join up.

The stack of this module runs with the standard OTEL_* variables pointing at
`benchmarks.otlp_receiver` (the `TraceService` of opentelemetry-proto) and LOG_FORMAT=json. One
Ask must make one trace holding spans of all four services, each service's server span under the
gateway's client span that called it, PostgreSQL spans under the retriever's, Redis spans under
the gateway's, and the LLM span with its token counts; no attribute may hold the question. A
failing call's request id is its trace's id; the latency histogram's exemplar and the JSON log
line of the call name the same trace; an ingest job's batch links to the trace that recorded it.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from benchmarks.otlp_receiver import OtlpReceiver, ReceivedSpan
from ragline.client import DocumentToIngest, RaglineClient, request_id_of
from ragline.devstack import Stack

pytestmark = pytest.mark.integration

SERVICES = {"ragline-gateway", "ragline-embedder", "ragline-retriever", "ragline-generator"}
QUESTION = "How tall is the Eiffel Tower in metres?"
SPAN_TIMEOUT = 60.0


class TracedStack:
    def __init__(self, stack: Stack, receiver: OtlpReceiver) -> None:
        self.stack, self.receiver = stack, receiver


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedStack]:
    receiver = OtlpReceiver()
    receiver.start()
    env = {
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        # Spans reach the receiver a tenth of a second after they end, not the SDK's default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
        # Answers come from the generator (its stage, its spans), not the extractive mode "auto" may pick.
        "GATEWAY_ANSWER_MODE": "generative",
    }
    stack = Stack(state=tmp_path_factory.mktemp("ragline-traced"), free_ports=True, env=env)
    stack.start()
    yield TracedStack(stack, receiver)
    stack.stop()
    receiver.stop()


def _read(request: urllib.request.Request) -> str:
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(reply.read().decode())


def _trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def _server_span(spans: list[ReceivedSpan], service: str, method: str) -> ReceivedSpan:
    matches = [s for s in spans if s.service == service and s.span.name.endswith(f"/{method}")]
    assert matches, f"no {service} span of {method}"
    return matches[0]


async def test_one_ask_is_one_trace_across_the_four_services(traced: TracedStack) -> None:
    stack, receiver = traced.stack, traced.receiver
    async with RaglineClient(stack["gateway"].address, timeout=120, api_key=stack.api_key) as client:
        await client.ingest(
            [
                DocumentToIngest(
                    "eiffel", b"The Eiffel Tower in Paris is 330 metres tall and was built for the 1889 fair."
                ),
                DocumentToIngest("tea", b"Green tea is made from leaves that are steamed and dried."),
            ]
        )
        answer = await client.ask(QUESTION, max_tokens=24, top_k=2)
    assert answer.usage.completion_tokens > 0

    def ask_is_complete(spans: list[ReceivedSpan]) -> bool:
        asks = [s for s in spans if s.span.name == "/ragline.v1.GatewayService/Ask"]
        return bool(asks) and any(
            s.attribute("gen_ai.usage.output_tokens") for s in _trace(spans, asks[0].trace_id)
        )

    spans = receiver.wait_for(ask_is_complete, SPAN_TIMEOUT)
    ask = next(s for s in spans if s.span.name == "/ragline.v1.GatewayService/Ask")
    # Give the slowest exporter its next flush, then take the whole trace.
    trace = _trace(receiver.wait_for(lambda _: True, 0), ask.trace_id)
    by_id = {s.span_id: s for s in trace}

    assert {s.service for s in trace} == SERVICES
    # One root, the gateway's server span (the client is not traced), and every other span under it.
    assert [s for s in trace if not s.parent_id] == [ask]
    for span in trace:
        assert ask in [span, *_ancestors(span, by_id)], f"{span.service}:{span.span.name} is not in the tree"
    # Each internal service's server span is the child of the gateway's client span of the same call.
    for service, method in (
        ("ragline-embedder", "Embed"),
        ("ragline-retriever", "SearchChunks"),
        ("ragline-generator", "GenerateStream"),
    ):
        server = _server_span(trace, service, method)
        client_span = by_id[server.parent_id]
        assert (client_span.service, client_span.span.name) == ("ragline-gateway", server.span.name)

    retriever_server = _server_span(trace, "ragline-retriever", "SearchChunks")
    search = next(s for s in trace if s.span.name == "retriever.search")
    assert search.parent_id == retriever_server.span_id
    assert search.attribute("ragline.search.mode") == "hybrid"
    assert search.attribute("ragline.search.top_k") >= 2  # type: ignore[operator]
    assert search.attribute("ragline.search.hits") >= 1  # type: ignore[operator]
    assert isinstance(search.attribute("ragline.search.best_score"), float)
    sql = [s for s in trace if s.attribute("db.system") == "postgresql"]
    assert sql and all(s.service == "ragline-retriever" for s in sql)
    # Under the retriever's server span of the call that ran them (the search's, the collection lookup's).
    assert all(
        any(
            a.service == "ragline-retriever" and by_id[a.parent_id].service == "ragline-gateway"
            for a in _ancestors(s, by_id)
        )
        for s in sql
    )
    assert any(search in _ancestors(s, by_id) for s in sql)
    # The gateway's cache reads and writes (the retriever may publish to Redis too).
    redis = [s for s in trace if s.attribute("db.system") == "redis" and s.service == "ragline-gateway"]
    assert redis and all(ask in _ancestors(s, by_id) for s in redis)

    llm = next(s for s in trace if s.attribute("gen_ai.operation.name") == "chat")
    assert llm.service == "ragline-generator"
    assert _server_span(trace, "ragline-generator", "GenerateStream") in _ancestors(llm, by_id)
    assert llm.attribute("gen_ai.request.model") == answer.model
    assert llm.attribute("gen_ai.usage.input_tokens") == answer.usage.prompt_tokens
    assert llm.attribute("gen_ai.usage.output_tokens") == answer.usage.completion_tokens
    assert llm.attribute("gen_ai.response.finish_reasons") in (["stop"], ["length"])
    batches = [s for s in trace if s.span.name == "embedder.batch"]
    assert batches and all(s.attribute("ragline.embedder.batch_size") == 1 for s in batches)
    stages = {s.span.name for s in trace if s.service == "ragline-gateway"}
    assert {"gateway.embed", "gateway.retrieve", "gateway.generate", "gateway.cache"} <= stages
    # Text capture is off: no attribute carries the question.
    assert not [s.span.name for s in trace for kv in s.span.attributes if "Eiffel" in str(kv.value)]

    # The gateway's JSON log has the call's line, with its tenant and trace.
    lines = [
        json.loads(line) for line in stack["gateway"].log_tail(10**7).splitlines() if line.startswith("{")
    ]
    calls = [line for line in lines if line.get("method") == "Ask" and line.get("trace_id") == ask.trace_id]
    assert calls and calls[0]["code"] == "OK" and calls[0]["tenant"] == "default"
    assert calls[0]["duration_seconds"] > 0

    # The OpenMetrics exposition carries sampled traces' ids as exemplars of the latency histograms.
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack['gateway'].metrics_port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    exposition = await asyncio.to_thread(_read, request)
    traced_ids = {s.trace_id for s in receiver.spans()}
    exemplars = [
        line.split('trace_id="')[1][:32]
        for line in exposition.splitlines()
        if line.startswith("ragline_grpc_server_handling_seconds_bucket") and 'trace_id="' in line
    ]
    assert exemplars and set(exemplars) <= traced_ids


async def test_a_failing_calls_request_id_is_its_trace_id(traced: TracedStack) -> None:
    stack, receiver = traced.stack, traced.receiver
    async with RaglineClient(stack["gateway"].address, timeout=60, api_key=stack.api_key) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.search("anything", collection="no-such-collection")
    error = failed.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    request_id = request_id_of(error)
    assert len(request_id) == 32 and int(request_id, 16)
    status = rpc_status.from_call(error)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
    assert [info.metadata["request_id"] for info in infos] == [request_id]

    spans = receiver.wait_for(
        lambda spans: any(
            s.trace_id == request_id and s.span.name == "/ragline.v1.GatewayService/Search" for s in spans
        ),
        SPAN_TIMEOUT,
    )
    search = next(s for s in spans if s.trace_id == request_id and s.span.name.endswith("/Search"))
    assert search.service == "ragline-gateway"
    assert search.span.status.code == search.span.status.STATUS_CODE_ERROR


async def test_an_ingest_jobs_batch_links_to_the_trace_that_recorded_it(
    traced: TracedStack, tmp_path: Path
) -> None:
    stack, receiver = traced.stack, traced.receiver
    async with RaglineClient(stack["gateway"].address, timeout=60, api_key=stack.api_key) as client:
        job = await client.create_ingest_job(
            [DocumentToIngest("basalt", b"Basalt is a dark volcanic rock formed from cooling lava.")]
        )
        await client.wait_for_ingest_job(job.job_id, timeout=60)
    spans = receiver.wait_for(
        lambda spans: (
            any(s.span.name.endswith("/CreateIngestJob") for s in spans)
            and any(s.span.name == "gateway.ingest.batch" for s in spans)
        ),
        SPAN_TIMEOUT,
    )
    created = next(s for s in spans if s.span.name.endswith("/CreateIngestJob"))
    batches = [s for s in spans if s.span.name == "gateway.ingest.batch"]
    linked = [s for s in batches if created.trace_id in {link.trace_id.hex() for link in s.span.links}]
    assert linked, "no ingest batch links to the job's trace"
    batch = linked[0]
    assert batch.trace_id != created.trace_id
    chunking = [s for s in spans if s.trace_id == batch.trace_id and s.span.name == "gateway.chunk"]
    assert chunking and chunking[0].attribute("ragline.ingest.chunks") >= 1  # type: ignore[operator]
