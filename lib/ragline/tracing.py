"""OpenTelemetry traces for every Ragline process, configured only by the standard `OTEL_*` variables.

`setup` runs once at a service's start (`ragline.server.run_service`). When an OTLP endpoint is
set (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the SDK is not
disabled, it installs a tracer provider with a batching OTLP/gRPC exporter, the head sampler
`OTEL_TRACES_SAMPLER(_ARG)` names, and the maintained instrumentations of asyncpg and redis. With
nothing set it installs nothing: `span` hands out one shared no-op context and the instrumentations
are not loaded, so an untraced deployment pays nothing.

gRPC calls are traced here rather than by opentelemetry-instrumentation-grpc, whose grpc.aio
interceptors cost a call (client and server) ~370 us of CPU at 10% sampling against ~180 us this way
(issue #17; benchmarks/bench_tracing_hop.py measures both): `outgoing_call` (used by ragline.channels) puts the
trace context into a call's metadata through the configured propagators, under a client span that
is recorded only when sampled, and `server_span` (used by ragline.server's interceptor) makes the
server span under the caller's context. Every tracer comes from a `LeanTracerProvider`
(ragline.lean_tracer), which makes no SDK span under an unsampled parent, and an unsampled server
span turns the asyncpg and redis instrumentations off for its request (Search p50 at 10% sampling
+4.8% and +9.9% over untraced before, +3.5% at the median of four runs after; README, Tracing).

The rest is what the services need from the current trace: spans of their own stages, the
request id of an error (the trace id), an exemplar for a latency histogram, and the W3C
`traceparent` that an ingest job keeps so that its documents' spans link to the request that
queued them. Question and document text go into attributes only with `RAGLINE_TRACE_CAPTURE_TEXT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ragline.config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ragline.lean_tracer import LeanTracerProvider

log = logging.getLogger(__name__)

TRACER = trace.get_tracer("ragline")
_PROPAGATOR = TraceContextTextMapPropagator()
# gRPC services whose calls make no spans: health checks every few seconds would drown the traces.
_UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


@dataclass
class _State:
    enabled: bool = False
    capture_text: bool = False
    tracer: trace.Tracer = TRACER
    # Whether the sampler follows the parent's decision, so that nothing under an unsampled span records.
    parent_based: bool = False


_state = _State()


@dataclass(frozen=True)
class Tracing:
    """What `setup` installed; `shutdown` sends the spans still buffered."""

    enabled: bool
    """Whether spans are exported (an OTLP endpoint is set and OTEL_SDK_DISABLED is not true)."""
    provider: Any = None
    """The SDK tracer provider, when enabled."""

    def shutdown(self) -> None:
        """Flushes and stops the exporter; nothing when tracing is off."""
        if self.provider is not None:
            self.provider.shutdown()


def _env(environ: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return ""


def setup(service: str, *, capture_text: bool = False, environ: Mapping[str, str] | None = None) -> Tracing:
    """Installs tracing for the process `service` as the OTEL_* variables say; raises ConfigError on a bad one.

    `service` names the process in traces unless OTEL_SERVICE_NAME (or service.name in
    OTEL_RESOURCE_ATTRIBUTES) names it otherwise.
    """
    env = os.environ if environ is None else environ
    _state.capture_text = capture_text
    if _env(env, "OTEL_SDK_DISABLED").lower() == "true" or _env(env, "OTEL_TRACES_EXPORTER") == "none":
        return Tracing(enabled=False)
    if not _env(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        return Tracing(enabled=False)
    protocol = _env(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol != "grpc":
        raise ConfigError(
            f"invalid configuration:\n  OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Ragline exports traces "
            "over OTLP/gRPC only; set it to grpc (or leave it unset) and point the endpoint at port 4317"
        )
    # Imported here: an untraced process never loads the SDK, the exporter or the instrumentations.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    try:
        # Reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the sampler comes from OTEL_TRACES_SAMPLER(_ARG).
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: f"ragline-{service}"}))
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  OTEL_*: {exc}") from None
    lean = activate(provider)
    trace.set_tracer_provider(lean)
    AsyncPGInstrumentor().instrument(tracer_provider=lean)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=lean)
    log.info("tracing on: %s exports spans as %s", service, resource.attributes.get(SERVICE_NAME))
    return Tracing(enabled=True, provider=provider)


def activate(provider: TracerProvider) -> LeanTracerProvider:
    """Makes Ragline's spans, and the trace context its gRPC calls carry, come from `provider` (`setup` does
    this; tests and benchmarks call it with a provider of their own); returns the lean provider over it."""
    from ragline.lean_tracer import LeanTracerProvider

    lean = LeanTracerProvider(provider)
    _state.tracer = lean.get_tracer("ragline")
    _state.parent_based = lean.parent_based
    _state.enabled = True
    return lean


def deactivate() -> None:
    """Undoes `activate`: no more spans and no trace context in calls (the global provider stays as it is)."""
    _state.enabled = False
    _state.parent_based = False
    _state.tracer = TRACER


def enabled() -> bool:
    """Whether this process exports spans."""
    return _state.enabled


def capture_text() -> bool:
    """Whether question and document text may go into span attributes (RAGLINE_TRACE_CAPTURE_TEXT)."""
    return _state.capture_text


_NO_SPAN: contextlib.AbstractContextManager[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    links: Sequence[Link] = (),
    parent: Span | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> contextlib.AbstractContextManager[Span]:
    """A span current for the body, child of `parent` or else of the current span; a shared no-op
    when tracing is off. An exception leaving the body marks it as an error and is recorded on it.
    Under an unsampled span (with a parent-based sampler) the body gets that span (see ragline.lean_tracer)."""
    if not _state.enabled:
        return _NO_SPAN
    context = trace.set_span_in_context(parent) if parent is not None else None
    return _state.tracer.start_as_current_span(name, context, kind, attributes, links)


def traced_method(path: str) -> bool:
    """Whether calls of the gRPC method `path` (/package.Service/Method) make spans: health and reflection do not."""
    return path.lstrip("/").rpartition("/")[0] not in _UNTRACED_SERVICES


@functools.cache
def _rpc_attributes(path: str) -> Mapping[str, Any]:
    # The attributes opentelemetry-instrumentation-grpc gives a call's spans (the SDK copies them).
    service, _, method = path.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _with_trace_context(metadata: Any, context: context_api.Context) -> tuple[tuple[str, str], ...]:
    """A call's `metadata` plus the trace context of `context`, as the configured
    propagators (OTEL_PROPAGATORS: W3C traceparent, tracestate and baggage by default) write it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context)
    return (*(metadata or ()), *carrier.items())


# The tasks that end sampled calls' client spans: the event loop keeps only weak references to tasks.
_ENDING: set[asyncio.Task[None]] = set()


def outgoing_call(path: str, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`call(*args, **kwargs)`, a grpc.aio call of the method `path`, under a client span whose context goes
    in the call's metadata; a sampled span ends when the call has its status. Tracing must be on."""
    span = _state.tracer.start_span(path, kind=SpanKind.CLIENT, attributes=_rpc_attributes(path))
    kwargs["metadata"] = _with_trace_context(kwargs.get("metadata"), trace.set_span_in_context(span))
    if not span.is_recording():
        return call(*args, **kwargs)
    try:
        rpc = call(*args, **kwargs)
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
        raise
    task = asyncio.get_running_loop().create_task(_end_with(span, rpc))
    _ENDING.add(task)
    task.add_done_callback(_ENDING.discard)
    return rpc


async def _end_with(span: Span, rpc: Any) -> None:
    """Ends the client span of the grpc.aio call `rpc` once the call has its status (whoever reads its replies)."""
    try:
        code: grpc.StatusCode = await rpc.code()
        set_grpc_status(span, code)
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {await rpc.details()}"))
    finally:
        span.end()


def set_grpc_status(target: Span, code: grpc.StatusCode) -> None:
    """Sets the status code a call ended with on its span, when the span is recording."""
    if target.is_recording():
        target.set_attribute("rpc.grpc.status_code", code.value[0])


def server_span(path: str, call: grpc.aio.ServicerContext) -> contextlib.AbstractContextManager[Span]:
    """The server span of the call `call` to the method `path`, current for the body, under the trace context
    the caller sent; the shared no-op when tracing is off or the method is not traced (`traced_method`)."""
    if not _state.enabled or not traced_method(path):
        return _NO_SPAN
    return _ServerSpan(path, call)


class _ServerSpan:
    """What `server_span` returns when tracing is on (a class: a generator-based context manager costs more)."""

    __slots__ = ("_call", "_path", "_span", "_token")

    def __init__(self, path: str, call: grpc.aio.ServicerContext) -> None:
        self._path, self._call = path, call

    def __enter__(self) -> Span:
        # Values of binary (-bin) keys are bytes; the propagators read only text keys.
        carrier = {key: value for key, value in self._call.invocation_metadata() or ()}
        parent = propagate.extract(carrier)
        span = _state.tracer.start_span(self._path, parent, SpanKind.SERVER, _rpc_attributes(self._path))
        if span.is_recording():
            span.set_attributes(_peer_attributes(self._call.peer()))
        self._span = span
        context = trace.set_span_in_context(span, parent)
        if _state.parent_based and not span.get_span_context().trace_flags.sampled:
            # Nothing under this span can be sampled, so the asyncpg and redis instrumentations, which check
            # this key first, step aside: their wrappers cost each statement ~45 us before asking the tracer.
            context = context_api.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, context)
        self._token = context_api.attach(context)
        return span

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        context_api.detach(self._token)
        self._span.end()


def _peer_attributes(peer: str) -> dict[str, str]:
    """The client's address as opentelemetry-instrumentation-grpc gives it (`peer`: ipv4:127.0.0.1:57284)."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {}
    ip, _, port = address.split(",")[0].rpartition(":")
    return {"net.peer.ip": ip, "net.peer.port": port}


def record_hits(target: Span, mode: str, top_k: int, scores: Sequence[float]) -> None:
    """Sets a search's attributes on `target`: mode, top_k, hits returned and the best score."""
    if not target.is_recording():
        return
    target.set_attribute("ragline.search.mode", mode)
    target.set_attribute("ragline.search.top_k", top_k)
    target.set_attribute("ragline.search.hits", len(scores))
    if scores:
        target.set_attribute("ragline.search.best_score", max(scores))


def current_span() -> Span:
    """The span of the work being done now (a no-op span when there is none)."""
    return trace.get_current_span()


def mark_error(code_name: str, message: str) -> None:
    """Marks the current span as failed with gRPC status `code_name`, so a tail sampler keeps its trace."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_status(Status(StatusCode.ERROR, f"{code_name}: {message}"))


def trace_ids() -> tuple[str, str]:
    """The current trace id and span id in hex, or two empty strings outside a trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def new_request_id() -> str:
    """The id an error's caller is given: the current trace id, or a random one of the same shape untraced."""
    trace_id, _ = trace_ids()
    return trace_id or uuid.uuid4().hex


def exemplar() -> dict[str, str] | None:
    """The exemplar labels of a latency observation: the trace id, when the current span is sampled."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": trace.format_trace_id(context.trace_id)}


def traceparent() -> str:
    """The W3C traceparent header of the current span, to store with work done later; empty untraced."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def links_to(traceparents: Iterable[str]) -> list[Link]:
    """Links to the spans that stored traceparents name, once each; empty or malformed ones are skipped."""
    links: dict[str, Link] = {}
    for header in traceparents:
        if not header or header in links:
            continue
        span_context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": header})).get_span_context()
        if span_context.is_valid:
            links[header] = Link(span_context)
    return list(links.values())


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Runs the body under a span context that is not sampled, so its calls (and what the services they
    reach do for them, with the default parent-based sampler) make no spans: for background polling."""
    if not _state.enabled:
        yield
        return
    ids = uuid.uuid4().int
    unsampled = NonRecordingSpan(
        SpanContext(ids >> 64, ids & (2**64 - 1), is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )
    token = context_api.attach(trace.set_span_in_context(unsampled))
    try:
        yield
    finally:
        context_api.detach(token)


def set_text(target: Span, key: str, text: str) -> None:
    """Sets attribute `key` to question or document `text` on `target`, only when text capture is on."""
    if _state.capture_text and target.is_recording():
        target.set_attribute(key, text)
