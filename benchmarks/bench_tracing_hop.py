"""`make bench` (tracing_hop): the CPU that tracing adds to one gRPC hop, Ragline's way and opentelemetry-instrumentation-grpc's.

Why Ragline traces its gRPC calls itself (issue #17): in one process, a client calls a trivial
`Embed` through a `ReopeningChannel` to a `grpc.aio` server behind `ragline.server`'s interceptor,
each call under a root span of its own (as a gateway's calls are under its server span), with
head sampling at 10% and 100% (`parentbased_traceidratio`, `parentbased_always_on`) and spans
exported by a batching processor to an exporter that drops them. Configurations:

- `off`: no tracing at all;
- `root_only`: only the root spans (what a traced gateway pays per request whatever its calls cost);
- `otel_grpc`: the maintained grpc.aio client and server interceptors of opentelemetry-instrumentation-grpc;
- `ragline`: `ragline.tracing` (context put into the metadata by the channel, a client span only when
  sampled, the server span made by ragline.server's own interceptor).

It reports the process's CPU time per call (client and server together; median of the rounds,
which alternate between configurations so that a busy machine hits all alike) and its cost over `off`.
BENCH_TRACING_HOP_CALLS and BENCH_TRACING_HOP_ROUNDS set the calls per round (default 200) and the
rounds (30): short rounds, so that the load of a shared machine changes little within one turn.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, aio_server_interceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from benchmarks.report import write_report
from ragline import tracing
from ragline.channels import ReopeningChannel
from ragline.server import _Interceptor
from ragline.tls import ClientCertificates, ClientTlsConfig
from ragline.v1 import embedder_service_pb2, embedder_service_pb2_grpc

CALLS = int(os.environ.get("BENCH_TRACING_HOP_CALLS", "200"))
ROUNDS = int(os.environ.get("BENCH_TRACING_HOP_ROUNDS", "30"))


class _Dropping(SpanExporter):
    """Takes the batches and keeps nothing: what is measured is making the spans, not sending them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class _Embedder(embedder_service_pb2_grpc.EmbedderServiceServicer):
    async def Embed(
        self, request: embedder_service_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_service_pb2.EmbedResponse:
        return embedder_service_pb2.EmbedResponse(model="toy", dimension=1)


@dataclass
class _Configuration:
    name: str
    sampling: float
    server: grpc.aio.Server
    channel: ReopeningChannel
    provider: TracerProvider | None
    exporter: _Dropping | None

    async def run(self, calls: int) -> float:
        """CPU seconds per call of `calls` sequential calls."""
        if self.name == "ragline" and self.provider is not None:
            tracing.activate(self.provider)
        else:
            tracing.deactivate()
        stub = embedder_service_pb2_grpc.EmbedderServiceStub(self.channel)
        request = embedder_service_pb2.EmbedRequest(texts=["a"])
        started = time.process_time()
        if self.provider is None:
            for _ in range(calls):
                await stub.Embed(request, timeout=10)
        else:
            tracer = self.provider.get_tracer("bench")
            for _ in range(calls):
                with tracer.start_as_current_span("request"):
                    await stub.Embed(request, timeout=10)
        return (time.process_time() - started) / calls


async def _configuration(name: str, sampling: float) -> _Configuration:
    provider = exporter = None
    interceptors: list[grpc.aio.ServerInterceptor] = [_Interceptor()]
    if name != "off":
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sampling)), shutdown_on_exit=False)
        exporter = _Dropping()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if name == "otel_grpc":
        interceptors.insert(0, aio_server_interceptor(tracer_provider=provider))  # type: ignore[no-untyped-call]
    server = grpc.aio.server(interceptors=interceptors)
    embedder_service_pb2_grpc.add_EmbedderServiceServicer_to_server(_Embedder(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    instrumentor = GrpcAioInstrumentorClient()  # type: ignore[no-untyped-call]
    if name == "otel_grpc":
        # The instrumentor adds its interceptors to the channels opened while it is installed.
        instrumentor.instrument(tracer_provider=provider)
    try:
        channel = ReopeningChannel(
            f"127.0.0.1:{port}", ["ragline.v1.EmbedderService"], ClientCertificates(ClientTlsConfig())
        )
    finally:
        if name == "otel_grpc":
            instrumentor.uninstrument()
    return _Configuration(name, sampling, server, channel, provider, exporter)


async def _bench() -> list[dict[str, Any]]:
    configurations = [await _configuration("off", 0.0)] + [
        await _configuration(name, sampling)
        for name in ("root_only", "otel_grpc", "ragline")
        for sampling in (0.1, 1.0)
    ]
    per_call: dict[int, list[float]] = {i: [] for i in range(len(configurations))}
    try:
        for configuration in configurations:  # warm-up: connection, first-call caches
            await configuration.run(200)
        for round_number in range(ROUNDS):
            shift = round_number % len(configurations)
            for i in [*range(shift, len(configurations)), *range(shift)]:
                per_call[i].append(await configurations[i].run(CALLS))
    finally:
        tracing.deactivate()
        for configuration in configurations:
            await configuration.channel.close()
            await configuration.server.stop(None)
            if configuration.provider is not None:
                configuration.provider.shutdown()
    baseline = statistics.median(per_call[0])
    rows = []
    for i, configuration in enumerate(configurations):
        cpu = statistics.median(per_call[i])
        rows.append(
            {
                "tracing": configuration.name,
                "sampling": configuration.sampling,
                "cpu_us_per_call": cpu * 1e6,
                "cost_us_per_call": (cpu - baseline) * 1e6,
                "cost_pct": (cpu / baseline - 1) * 100,
                "spans_exported": configuration.exporter.spans if configuration.exporter else 0,
            }
        )
    return rows


def main() -> None:
    """Measures every configuration, prints the table and writes bench-results/tracing_hop.json."""
    rows = asyncio.run(_bench())
    write_report("tracing_hop", rows, {"calls_per_round": CALLS, "rounds": ROUNDS})


if __name__ == "__main__":
    main()
