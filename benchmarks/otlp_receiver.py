"""A real OTLP/gRPC trace receiver: the `TraceService` of the `opentelemetry-proto` package, keeping what it is sent.

The end-to-end trace test and the tracing benchmark point the services' exporters at it
(`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>`), so spans travel exactly as they do to a
collector: batched by the SDK, serialized, sent over gRPC. It runs a blocking gRPC server on its
own threads, so that it serves whatever the caller's event loop is doing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported, with the service that sent it."""

    service: str
    """The exporting process's `service.name` resource attribute."""
    span: trace_pb2.Span
    """The span, ids as bytes."""

    @property
    def trace_id(self) -> str:
        """The trace id in hex, as the request id of an error shows it."""
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        """The span id in hex."""
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        """The parent span's id in hex; empty for a root span."""
        return self.span.parent_span_id.hex()

    def attribute(self, key: str) -> object:
        """The attribute's value (str, int, float, bool or a list of them), or None."""
        for kv in self.span.attributes:
            if kv.key == key:
                return _value(kv.value)
        return None


def _value(value: object) -> object:
    kind = value.WhichOneof("value")  # type: ignore[attr-defined]
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]  # type: ignore[attr-defined]
    return getattr(value, kind) if kind else None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                received.extend(ReceivedSpan(service, span) for span in scope_spans.spans)
        self._receiver._add(received, request.ByteSize())
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Listens on 127.0.0.1 (a free port unless given) and keeps every span it is sent."""

    def __init__(self, port: int = 0, *, keep: bool = True) -> None:
        """`keep` False counts spans and bytes without keeping them (for a long benchmark)."""
        self._keep = keep
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.span_count = 0
        """Spans received so far."""
        self.bytes_received = 0
        """Bytes of the export requests received so far."""
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")

    @property
    def endpoint(self) -> str:
        """What OTEL_EXPORTER_OTLP_ENDPOINT is set to (http: plaintext gRPC)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts serving."""
        self._server.start()

    def stop(self) -> None:
        """Stops serving at once."""
        self._server.stop(0)

    def _add(self, spans: list[ReceivedSpan], size: int) -> None:
        with self._lock:
            self.span_count += len(spans)
            self.bytes_received += size
            if self._keep:
                self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        """The spans received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float) -> list[ReceivedSpan]:
        """The spans once `predicate` holds for them; TimeoutError (listing what arrived) if it does not in time."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({f"{s.service}:{s.span.name}" for s in spans})
                raise TimeoutError(f"the spans received never satisfied the condition; received: {names}")
            time.sleep(0.1)
