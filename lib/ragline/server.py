"""Runs a `grpc.aio` server the same way for every service.

One function gives each service the same operational behaviour: standard health
(NOT_SERVING until its dependencies are ready, and again whenever they go down),
server reflection, a Prometheus endpoint, per-RPC metrics and error mapping through an
interceptor, and a graceful shutdown on SIGTERM (health goes NOT_SERVING, new calls are
refused, in-flight calls get a grace period, then the service closes its resources).
`run_service` is a service's whole entry point around it: settings, logging, tracing, then `serve`.
Every error a call returns carries its request id (the trace id) in the `ragline-request-id`
trailing metadata and in its `ErrorInfo`'s metadata, so a user's report leads to the trace.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import sys
import time
from collections import namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry.trace import Span

from ragline import call_log, tracing
from ragline.call_log import CallRecord, configure_logging
from ragline.channels import SERVER_OPTIONS
from ragline.config import ConfigError, ServerConfig, load_config
from ragline.errors import (
    DOMAIN,
    REQUEST_ID_KEY,
    Internal,
    InvalidArgument,
    ServiceError,
    logged_error_id,
    shorten,
)
from ragline.metrics import RPC_DURATION, RPC_HANDLED, start_metrics_server
from ragline.tls import ServerCertificates, ServerTlsConfig

log = logging.getLogger(__name__)

# How often the readiness probe runs; a dependency that goes down is noticed this quickly.
READINESS_INTERVAL_SECONDS = 2.0
# The health service name that is SERVING for as long as the server answers, whatever its readiness:
# Kubernetes' liveness probe asks for it, so a dependency that is down makes pods unready (the
# overall status, "") but never gets them restarted.
LIVENESS_SERVICE = "liveness"

# A handler cancelled this close to its deadline was cancelled by the deadline, not by the client:
# the server's timer and this process's clock can differ by a few milliseconds.
_DEADLINE_SLACK_SECONDS = 0.05

C = TypeVar("C")


@dataclass(frozen=True)
class Servicer:
    """One gRPC service to register: its full proto name, its `add_*_to_server` and the implementation."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    implementation: Any


class Lifecycle(Protocol):
    """What a service does around serving: the three steps `serve` runs at the right moments."""

    async def start(self) -> None:
        """Loads models and opens pools; runs while health already answers NOT_SERVING."""

    async def check_ready(self) -> None:
        """Raises while a dependency is unavailable; its message is logged."""

    async def stop(self) -> None:
        """Closes what `start` opened, after in-flight calls have finished."""


# What a service's `build` makes of its settings: its lifecycle, its gRPC services, and optionally the
# interceptors of its own that `serve` installs.
Built = (
    tuple[Lifecycle, Sequence[Servicer]]
    | tuple[Lifecycle, Sequence[Servicer], Sequence[grpc.aio.ServerInterceptor]]
)


class _Interceptor(grpc.aio.ServerInterceptor):
    """Times every call, counts it by status code, turns exceptions into statuses and, with tracing on, makes
    its server span (`tracing.server_span`: here rather than in an interceptor of its own, which would cost
    every call, sampled or not, one more layer of grpc.aio's interception)."""

    def __init__(self) -> None:
        # A method's wrapped handler, made at its first call: every call of it gets the same one.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        # Unknown methods are left to grpc (UNIMPLEMENTED) so that arbitrary paths never become label values.
        if handler is None:
            return handler
        wrapped = self._wrap(handler, handler_call_details.method)
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(handler: grpc.RpcMethodHandler, path: str) -> grpc.RpcMethodHandler:
        deserializer = _tolerant_deserializer(handler.request_deserializer, path)
        # The four kinds of method: grpc's handler constructor, our wrapper (by whether replies stream),
        # and whether requests stream (client streaming hands the wrapper an iterator of requests).
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, _wrap_unary, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, _wrap_stream, False),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, _wrap_unary, True),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, _wrap_stream, True),
        )
        for kind, make_handler, wrap, streaming_request in kinds:
            behavior = getattr(handler, kind)
            if behavior and wrap is _wrap_stream and not inspect.isasyncgenfunction(behavior):
                # A handler that streams its replies with `context.write` (the health service's Watch) is a
                # coroutine: wrapped like a unary one, since iterating it would raise TypeError.
                wrap = _wrap_unary
            if behavior:
                return make_handler(
                    wrap(behavior, path, streaming_request=streaming_request),
                    request_deserializer=deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


@dataclass(frozen=True)
class _Undecodable:
    """Stands in for a request message whose bytes did not parse, so that the call can be answered.

    grpc.aio deserializes a request before any handler runs and answers a parse error with
    UNKNOWN, a traceback and no metric; handing this on lets the wrapped handler answer
    INVALID_ARGUMENT and count the call like any other.
    """

    reason: str
    """The parser's message: which message type and what was wrong with the bytes."""


def _tolerant_deserializer(
    deserializer: Callable[[bytes], Any] | None, path: str
) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            # A client's mistake, not the server's: one line, no traceback.
            log.warning("undecodable request to %s: %s", path, exc)
            return _Undecodable(str(exc))

    return deserialize


def _decoded(request: Any) -> Any:
    """`request`, or INVALID_ARGUMENT when its bytes did not parse."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request could not be decoded ({request.reason}); serialize it from Ragline's ragline.v1 "
            "protos: string fields must be valid UTF-8 and messages nested at most 100 levels deep"
        )
    return request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)


def _decoded_request(request: Any, streaming_request: bool) -> Any:
    return _decoded_stream(request) if streaming_request else _decoded(request)


def _finished_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The code of a call whose handler was cancelled: DEADLINE_EXCEEDED when the deadline has passed."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class _Status(namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    """A status to abort with: grpc's own is not public."""


def _as_service_error(context: grpc.aio.ServicerContext, exc: BaseException) -> ServiceError:
    """The error `exc` stands for: itself, the code a failed downstream call had, or INTERNAL under an error id."""
    if isinstance(exc, ServiceError):
        return exc
    error = ServiceError("")
    if isinstance(exc, NotImplementedError) and context.code() == grpc.StatusCode.UNIMPLEMENTED:
        # A generated servicer base's method this server does not override: it set UNIMPLEMENTED and raised.
        error.message, error.code = (
            "this method is not implemented by this server",
            grpc.StatusCode.UNIMPLEMENTED,
        )
    elif isinstance(exc, grpc.aio.AioRpcError):
        # A downstream call failed: pass its code on, so UNAVAILABLE stays retryable upstream.
        error.message, error.code = shorten(exc.details() or exc.code().name), exc.code()
    else:
        return Internal(logged_error_id(log, f"unhandled {type(exc).__name__}", exc))
    return error


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, record: CallRecord) -> None:
    """Ends the call with the status that `exc` stands for, carrying the call's request id."""
    error = _as_service_error(context, exc)
    record.request_id = tracing.new_request_id()
    status = error.to_status()
    infos = [detail for detail in status.details if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo(reason=error.reason or error.code.name, domain=DOMAIN)
    if infos:
        infos[0].Unpack(info)
    info.metadata["request_id"] = record.request_id
    if infos:
        infos[0].Pack(info)
    else:
        status.details.add().Pack(info)
    tracing.mark_error(error.code.name, status.message)
    packed = rpc_status.to_status(status)
    await context.abort_with_status(
        _Status(packed.code, packed.details, (*packed.trailing_metadata, (REQUEST_ID_KEY, record.request_id)))
    )


def _record(
    service: str,
    method: str,
    context: grpc.aio.ServicerContext,
    started: float,
    record: CallRecord,
    span: Span,
) -> None:
    code = context.code()
    if code in (None, 0):
        code = grpc.StatusCode.OK
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    if isinstance(code, grpc.StatusCode):
        tracing.set_grpc_status(span, code)
    elapsed = time.perf_counter() - started
    RPC_DURATION.labels(service, method).observe(elapsed, tracing.exemplar())
    RPC_HANDLED.labels(service, method, code_name).inc()
    call_log.finish(record, service, method, code_name, elapsed)


def _wrap_unary(behavior: Any, path: str, *, streaming_request: bool) -> Any:
    service, _, method = path.lstrip("/").rpartition("/")

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with tracing.server_span(path, context) as span:
            started = time.perf_counter()
            record = call_log.begin(request)
            try:
                return await behavior(_decoded_request(request, streaming_request), context)
            except asyncio.CancelledError:
                _cancelled(context)
                raise
            except Exception as exc:
                await _abort_or_reraise(context, exc, record)
                raise
            finally:
                _record(service, method, context, started, record, span)

    return wrapper


def _wrap_stream(behavior: Any, path: str, *, streaming_request: bool) -> Any:
    service, _, method = path.lstrip("/").rpartition("/")

    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        with tracing.server_span(path, context) as span:
            started = time.perf_counter()
            record = call_log.begin(request)
            try:
                async for response in behavior(_decoded_request(request, streaming_request), context):
                    yield response
            except asyncio.CancelledError:
                _cancelled(context)
                raise
            except Exception as exc:
                await _abort_or_reraise(context, exc, record)
                raise
            finally:
                _record(service, method, context, started, record, span)

    return wrapper


def _cancelled(context: grpc.aio.ServicerContext) -> None:
    """Gives a call whose handler was cancelled its status, and marks its span failed with it."""
    code = _finished_code(context)
    context.set_code(code)
    tracing.mark_error(code.name, "the call was cancelled or its deadline passed")


async def _abort_or_reraise(context: grpc.aio.ServicerContext, exc: Exception, record: CallRecord) -> None:
    # An AbortError means the handler already chose its status; anything else gets one here.
    if isinstance(exc, grpc.aio.AbortError):
        return
    await _abort(context, exc, record)


# Set by whoever started the process (ragline.devstack) to learn the ports it bound: with port 0 the
# system picks them, so that no two processes can be given the same one.
PORTS_FILE_ENV = "RAGLINE_PORTS_FILE"


def _report_ports(port: int, metrics_port: int) -> None:
    """Writes the bound ports as JSON to the file `RAGLINE_PORTS_FILE` names, if it names one."""
    target = os.environ.get(PORTS_FILE_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"port": port, "metrics_port": metrics_port}))
    partial.replace(path)  # a reader sees the whole file or none


async def serve(
    name: str,
    config: ServerConfig,
    servicers: Sequence[Servicer],
    lifecycle: Lifecycle,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: ServerTlsConfig | None = None,
) -> None:
    """Runs a service until SIGTERM or SIGINT.

    With `tls` enabled the port speaks TLS only (mutual TLS when it names a client CA), and the
    certificate files are read again whenever they change.

    `interceptors` run inside the one that times, counts and maps errors, in their order (the
    first is outermost), so a call they refuse is counted with its status like any other.

    `lifecycle.start` runs while the server already answers health checks with NOT_SERVING;
    `lifecycle.check_ready` runs every few seconds and flips health between SERVING and
    NOT_SERVING; `lifecycle.stop` runs after in-flight calls have finished.
    """
    metrics_server, _ = start_metrics_server(config.host, config.metrics_port)
    options = [
        *SERVER_OPTIONS,
        ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(config.max_connection_age_grace_seconds * 1000)),
    ]
    server = grpc.aio.server(interceptors=[_Interceptor(), *interceptors], options=options)
    for servicer in servicers:
        servicer.add_to_server(servicer.implementation, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [s.name for s in servicers]
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    for service_name in ["", *service_names]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    address = f"{config.host}:{config.port}"
    if tls is not None and tls.enabled:
        port = server.add_secure_port(address, ServerCertificates(tls).credentials())
    else:
        port = server.add_insecure_port(address)
    await server.start()
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    transport = "plaintext" if tls is None or not tls.enabled else "mTLS" if tls.client_ca_file else "TLS"
    log.info(
        "%s listening on %s:%d over %s (metrics on :%d)",
        name,
        config.host,
        port,
        transport,
        metrics_server.server_port,
    )
    _report_ports(port, metrics_server.server_port)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def watch_readiness() -> None:
        serving: bool | None = None
        await lifecycle.start()
        while True:
            try:
                await lifecycle.check_ready()
                ready, reason = True, ""
            except Exception as exc:
                ready, reason = False, str(exc) or type(exc).__name__
            if ready != serving:
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for service_name in ["", *service_names]:
                    await health_servicer.set(service_name, status)
                if ready:
                    log.info("%s is ready", name)
                else:
                    log.warning("%s is not ready: %s", name, reason)
                serving = ready
            await asyncio.sleep(READINESS_INTERVAL_SECONDS)

    readiness = asyncio.create_task(watch_readiness())
    stopped = asyncio.create_task(stopping.wait())
    done, _ = await asyncio.wait({readiness, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if readiness in done and readiness.exception() is not None:
        # start() failed: the service cannot work, so it exits rather than report NOT_SERVING forever.
        error = readiness.exception()
        # The message says what to fix; the traceback is there for errors nobody anticipated.
        log.error("%s failed to start: %s", name, str(error) or repr(error), exc_info=error)
        await server.stop(0)
        await lifecycle.stop()
        raise SystemExit(1)

    log.info("%s shutting down (grace %.1fs)", name, config.shutdown_grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    readiness.cancel()
    await server.stop(config.shutdown_grace_seconds)
    await lifecycle.stop()
    metrics_server.shutdown()
    log.info("%s stopped", name)


def run_service(
    name: str,
    config_type: type[C],
    build: Callable[[C], Built],
    *,
    port: int,
    metrics_port: int,
) -> None:
    """Runs one service's process until SIGTERM: what its `python -m` entry point calls.

    Reads the server settings under the prefix `name.upper()` (`EMBEDDER_PORT`, `EMBEDDER_TLS_CERT_FILE`, ...), defaulting
    to the service's own `port` and `metrics_port`, then the service's settings `config_type`,
    sets up logging and tracing (`ragline.tracing`, from the OTEL_* variables), and serves what `build` makes of them: the lifecycle, the gRPC services
    it implements and, if it returns them too, interceptors of its own (`serve`'s `interceptors`). An invalid setting, found by either read or by `build`, ends the process
    with its message and exit code 2.
    """

    async def main() -> None:
        server_config = ServerConfig.from_env(name.upper(), port=port, metrics_port=metrics_port)
        tls = ServerTlsConfig.from_env(name.upper())
        config = load_config(config_type)
        configure_logging(server_config.log_level, server_config.log_format)
        # Before `build`: the gRPC instrumentation wraps the channels and the server made from here on.
        traces = tracing.setup(name, capture_text=server_config.trace_capture_text)
        try:
            built = build(config)
            interceptors = built[2] if len(built) == 3 else ()
            await serve(name, server_config, built[1], built[0], interceptors, tls)
        finally:
            traces.shutdown()

    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
