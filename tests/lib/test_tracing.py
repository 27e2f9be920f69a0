"""ragline.tracing and ragline.call_log without exporting anything: settings, request ids, JSON log lines.

The exported traces themselves are checked end to end by tests/e2e/test_traces_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, TraceFlags

from ragline import call_log, tracing
from ragline.channels import ReopeningChannel
from ragline.client import request_id_of
from ragline.config import ConfigError
from ragline.errors import NotFound, ServiceError
from ragline.lean_tracer import LeanTracerProvider
from ragline.server import _Interceptor
from ragline.tls import ClientCertificates, ClientTlsConfig
from ragline.v1 import embedder_service_pb2, embedder_service_pb2_grpc

HEX32 = set("0123456789abcdef")


def test_nothing_set_installs_nothing_and_spans_are_one_shared_no_op() -> None:
    traces = tracing.setup("toy", environ={})
    assert not traces.enabled and traces.provider is None
    assert tracing.span("a") is tracing.span("b")
    with tracing.span("stage") as span:
        assert not span.is_recording()
        assert tracing.trace_ids() == ("", "")
        assert tracing.traceparent() == ""
        assert tracing.exemplar() is None
    first, second = tracing.new_request_id(), tracing.new_request_id()
    assert first != second and len(first) == 32 and set(first) <= HEX32


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_SAMPLER": "always_on"},
    ],
)
def test_disabled_or_without_an_endpoint_tracing_stays_off(environ: dict[str, str]) -> None:
    assert not tracing.setup("toy", environ=environ).enabled


def test_an_exporter_protocol_other_than_grpc_is_refused_with_what_to_set() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf'.*grpc"):
        tracing.setup(
            "toy",
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
        )


def test_a_sampled_span_gives_the_request_id_exemplar_and_traceparent_of_its_trace() -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("call") as span:
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        assert tracing.new_request_id() == trace_id
        assert tracing.exemplar() == {"trace_id": trace_id}
        header = tracing.traceparent()
    assert header.startswith(f"00-{trace_id}-")
    (link,) = tracing.links_to([header, header, "", "not-a-traceparent"])
    assert trace.format_trace_id(link.context.trace_id) == trace_id


def test_json_lines_carry_the_trace_and_the_calls_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(call_log.JsonFormatter())
    call_log.RPC_LOGGER.addHandler(handler)
    monkeypatch.setattr(call_log, "_json", True)
    provider = TracerProvider()
    try:
        with provider.get_tracer("test").start_as_current_span("call") as span:
            record = call_log.begin(type("Request", (), {"tenant": "acme"})())
            record.request_id = "r" * 32
            call_log.finish(record, "ragline.v1.RetrieverService", "SearchChunks", "NOT_FOUND", 0.0125)
            call_log.finish(call_log.CallRecord(), "grpc.health.v1.Health", "Check", "OK", 0.001)
    finally:
        call_log.RPC_LOGGER.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    context = span.get_span_context()
    assert entry["trace_id"] == trace.format_trace_id(context.trace_id)
    assert entry["span_id"] == trace.format_span_id(context.span_id)
    assert (entry["service"], entry["method"], entry["code"]) == (
        "ragline.v1.RetrieverService",
        "SearchChunks",
        "NOT_FOUND",
    )
    assert (entry["tenant"], entry["request_id"], entry["duration_seconds"]) == ("acme", "r" * 32, 0.0125)
    assert entry["level"] == "WARNING"


def test_text_format_writes_no_per_call_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    call_log.RPC_LOGGER.addHandler(handler)
    monkeypatch.setattr(call_log, "_json", False)
    try:
        call_log.finish(call_log.CallRecord(), "ragline.v1.GatewayService", "Ask", "OK", 0.5)
    finally:
        call_log.RPC_LOGGER.removeHandler(handler)
    assert stream.getvalue() == ""


class _Failing(health.aio.HealthServicer):  # type: ignore[misc]
    """Answers Check with the error it is given."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        raise self.error


async def _failed_call(error: Exception) -> grpc.aio.AioRpcError:
    server = grpc.aio.server(interceptors=[_Interceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(_Failing(error), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(None)
    return failed.value


def _error_infos(error: grpc.aio.AioRpcError) -> list[error_details_pb2.ErrorInfo]:
    status = rpc_status.from_call(error)
    assert status is not None
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
    return infos


@pytest.fixture
async def untraced() -> AsyncIterator[None]:
    tracing.setup("toy", environ={})
    yield


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (
            NotFound("collection 'x' does not exist", field="collection"),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            ServiceError("the embedder is down", reason="EMBEDDER_UNAVAILABLE"),
            grpc.StatusCode.INTERNAL,
            "EMBEDDER_UNAVAILABLE",
        ),
        (RuntimeError("a bug"), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_every_error_carries_one_request_id_in_its_trailers_and_error_info(
    untraced: None, error: Exception, code: grpc.StatusCode, reason: str
) -> None:
    failed = await _failed_call(error)
    assert failed.code() == code
    request_id = request_id_of(failed)
    assert len(request_id) == 32 and set(request_id) <= HEX32
    (info,) = _error_infos(failed)
    assert (info.reason, info.domain) == (reason, "ragline.dev")
    assert dict(info.metadata) == {"request_id": request_id}


class _Embedder(embedder_service_pb2_grpc.EmbedderServiceServicer):
    """Answers Embed, keeping the traceparent each call came with and the span its handler ran under."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        self.contexts: list[trace.SpanContext] = []
        # Whether the asyncpg and redis instrumentations would trace the handler's statements.
        self.instrumented: list[bool] = []

    async def Embed(
        self, request: embedder_service_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_service_pb2.EmbedResponse:
        self.traceparents.append(str(dict(context.invocation_metadata() or ()).get("traceparent", "")))
        self.contexts.append(tracing.current_span().get_span_context())
        self.instrumented.append(is_instrumentation_enabled())
        return embedder_service_pb2.EmbedResponse(model="toy", dimension=1)


@pytest.fixture
async def traced_embedder(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[ReopeningChannel, _Embedder, InMemorySpanExporter]]:
    """An embedder behind ragline.server's interceptor and a channel to it, tracing into memory (every
    trace; parametrised indirectly, the sampler)."""
    exporter = InMemorySpanExporter()
    sampler = getattr(request, "param", ParentBased(ALWAYS_ON))
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.activate(provider)
    embedder = _Embedder()
    server = grpc.aio.server(interceptors=[_Interceptor()])
    embedder_service_pb2_grpc.add_EmbedderServiceServicer_to_server(embedder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = ReopeningChannel(
        f"127.0.0.1:{port}", ["ragline.v1.EmbedderService"], ClientCertificates(ClientTlsConfig())
    )
    try:
        yield channel, embedder, exporter
    finally:
        tracing.deactivate()
        await channel.close()
        await server.stop(None)


async def test_an_unsampled_call_carries_its_trace_unsampled_and_makes_no_span(
    traced_embedder: tuple[ReopeningChannel, _Embedder, InMemorySpanExporter],
) -> None:
    channel, embedder, exporter = traced_embedder
    with tracing.untraced(), tracing.span("stage") as stage:
        # A stage under an unsampled span is that span (with a parent-based sampler nothing under it records).
        assert stage is tracing.current_span() and not stage.is_recording()
        caller = stage.get_span_context()
        await embedder_service_pb2_grpc.EmbedderServiceStub(channel).Embed(
            embedder_service_pb2.EmbedRequest(texts=["a"]), timeout=10
        )
    (traceparent,) = embedder.traceparents
    assert traceparent.startswith(f"00-{trace.format_trace_id(caller.trace_id)}-") and traceparent.endswith(
        "-00"
    )
    # The handler ran in the caller's trace, unsampled, under a span id of its own.
    (server,) = embedder.contexts
    assert server.trace_id == caller.trace_id and server.span_id != caller.span_id
    assert not server.trace_flags.sampled
    assert exporter.get_finished_spans() == ()
    # Nothing under it could be sampled: the library instrumentations skip their work.
    assert embedder.instrumented == [False]


async def test_a_sampled_call_makes_a_client_span_under_the_caller_and_the_server_span_under_it(
    traced_embedder: tuple[ReopeningChannel, _Embedder, InMemorySpanExporter],
) -> None:
    channel, embedder, exporter = traced_embedder
    with tracing.span("request") as request:
        await embedder_service_pb2_grpc.EmbedderServiceStub(channel).Embed(
            embedder_service_pb2.EmbedRequest(texts=["a"]), timeout=10
        )
    for _ in range(100):  # the client span ends once the call's status is read, on the event loop
        if len(exporter.get_finished_spans()) == 3:
            break
        await asyncio.sleep(0.01)
    spans = {span.kind: span for span in exporter.get_finished_spans()}
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.name == server.name == "/ragline.v1.EmbedderService/Embed"
    assert client.parent is not None and client.parent.span_id == request.get_span_context().span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.context.span_id == embedder.contexts[0].span_id
    assert embedder.instrumented == [True]
    trace_id, span_id = (
        trace.format_trace_id(client.context.trace_id),
        trace.format_span_id(client.context.span_id),
    )
    (traceparent,) = embedder.traceparents
    assert traceparent.startswith(f"00-{trace_id}-{span_id}-")
    assert int(traceparent[-2:], 16) & TraceFlags.SAMPLED
    for span in (client, server):
        assert span.attributes is not None
        assert span.attributes["rpc.service"] == "ragline.v1.EmbedderService"
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]


@pytest.mark.parametrize("traced_embedder", [ALWAYS_ON], indirect=True)
async def test_under_a_sampler_that_ignores_the_parent_an_unsampled_callers_handler_stays_instrumented(
    traced_embedder: tuple[ReopeningChannel, _Embedder, InMemorySpanExporter],
) -> None:
    channel, embedder, _ = traced_embedder
    with tracing.untraced():
        await embedder_service_pb2_grpc.EmbedderServiceStub(channel).Embed(
            embedder_service_pb2.EmbedRequest(texts=["a"]), timeout=10
        )
    # ALWAYS_ON samples the handler's span whatever the caller decided, and what runs under it.
    assert embedder.contexts[0].trace_flags.sampled and embedder.instrumented == [True]


def test_lean_tracers_make_no_sdk_span_under_an_unsampled_parent_and_the_sdks_otherwise() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = LeanTracerProvider(provider).get_tracer("asyncpg")
    unsampled = trace.NonRecordingSpan(trace.SpanContext(1, 2, is_remote=True))
    with tracer.start_as_current_span("SELECT", trace.set_span_in_context(unsampled)) as statement:
        # The body runs under the unsampled parent: nothing under it could be sampled.
        assert statement is unsampled and tracing.current_span() is unsampled
        child = tracer.start_span("child")
        assert not child.is_recording() and child.get_span_context().trace_id == 1
        assert child.get_span_context().span_id != 2
    # A sampled caller's span, as a call's metadata brings it, does not record here, and still has children.
    sampled = trace.NonRecordingSpan(trace.SpanContext(3, 4, is_remote=True, trace_flags=TraceFlags(1)))
    with tracer.start_as_current_span("SELECT", trace.set_span_in_context(sampled)) as statement:
        assert statement.is_recording()
    (recorded,) = exporter.get_finished_spans()
    assert recorded.parent is not None and (recorded.parent.trace_id, recorded.parent.span_id) == (3, 4)
    # A sampler that may sample under an unsampled parent gets the SDK's tracer as it is.
    always = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    with (
        trace.use_span(unsampled),
        LeanTracerProvider(always).get_tracer("x").start_as_current_span("s") as span,
    ):
        assert span.is_recording()
