"""gRPC channel and server options shared by every hop, and deadline propagation.

Clients and servers must agree on keepalive: a client that pings more often than the
server permits gets its connection closed with ENHANCE_YOUR_CALM. Both sides take their
settings from here.

A target may name many replicas (`ipv4:127.0.0.1:1,127.0.0.1:2`, `dns:///embedder-headless:50052`):
channels spread calls over them round robin and, with client-side health checking, skip a
replica whose `grpc.health.v1` status is not SERVING, or that died, until it is back. Servers
close connections after a maximum age, so that clients resolve the target again and find
replicas started since. Channels retry UNAVAILABLE (a replica died or refused the call) on
another replica, except for the methods in NOT_RETRIED, which a second attempt could apply twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from ragline import tracing
from ragline.errors import DeadlineExceeded
from ragline.tls import ClientCertificates, client_certificates

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# How soon a channel tries again to connect to a dependency that was down. gRPC's defaults (1 s,
# growing 1.6 times per failure up to 120 s) leave calls failing for seconds, or minutes, after the
# dependency is healthy again; one connection attempt per half second to a server that is down
# costs nothing, so the wait stays short.
RECONNECT_BACKOFF_MS = (100, 500)

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    # Clients ping every KEEPALIVE_TIME_MS. The server permits half that: a ping timed a few
    # milliseconds early (timer jitter, a busy event loop) must not count as a strike, or three
    # of them close a healthy connection with ENHANCE_YOUR_CALM ("too_many_pings").
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


# Methods that a retry could apply twice: the first attempt may have reached a replica that did the
# work and died before answering, so only the caller, who knows what it asked for, may try again.
NOT_RETRIED: dict[str, str] = {
    "ragline.v1.ApiKeyStoreService/CreateStoredApiKey": "a second attempt would create a second key",
    "ragline.v1.IngestQueueService/CreateStoredIngestJob": "a second attempt would create a second job",
    "ragline.v1.IngestQueueService/AppendStoredIngestJob": "a second attempt would queue the documents twice",
    "ragline.v1.IngestQueueService/ClaimIngestWork": (
        "a second attempt would lease another batch while the first stays leased to nobody until it expires"
    ),
    "ragline.v1.RetrieverService/CreateStoredCollection": (
        "a second attempt would answer ALREADY_EXISTS for the collection the first created"
    ),
    "ragline.v1.AdminService/CreateApiKey": "a second attempt would create a second key",
    "ragline.v1.AdminService/MigrateCollection": (
        "a second attempt would answer ALREADY_EXISTS for the migration the first started"
    ),
    "ragline.v1.RetrieverService/MigrateStoredCollection": (
        "a second attempt would answer ALREADY_EXISTS for the migration the first started"
    ),
    "ragline.v1.AdminService/CreateCollection": (
        "a second attempt would answer ALREADY_EXISTS for the collection the first created"
    ),
    "ragline.v1.ConversationStoreService/AppendStoredTurn": "a second attempt would store the turn twice",
    "ragline.v1.GatewayService/CreateIngestJob": "a second attempt would create a second job",
    "ragline.v1.GatewayService/UploadIngestDocuments": "a second attempt would create a second job",
}
# The most a call's messages may hold in memory so that it can be sent again: gRPC's default (256 KiB) is
# less than a batch of embeddings, and a call that outgrows it is not retried at all.
RETRY_BUFFER_BYTES = 8 * 1024 * 1024


def service_config(services: Sequence[str], *, health_checked: bool) -> str:
    """The gRPC service config of a channel to the proto services `services`: round robin over the
    target's addresses, retries of UNAVAILABLE except for NOT_RETRIED, and with `health_checked`,
    client-side health checking (a replica gets calls only while its overall health is SERVING)."""
    retried = {
        "name": [{"service": service} for service in services],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }
    once = [
        {"service": path.partition("/")[0], "method": path.partition("/")[2]}
        for path in NOT_RETRIED
        if path.partition("/")[0] in services
    ]
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [retried, *([{"name": once}] if once else [])],
    }
    if health_checked:
        # "": the server's overall status, which ragline.server keeps equal to every service's it serves.
        config["healthCheckConfig"] = {"serviceName": ""}
    return json.dumps(config)


def open_channel(
    target: str,
    service: str,
    *more_services: str,
    certificates: ClientCertificates | None = None,
    health_checked: bool = False,
) -> grpc.aio.Channel:
    """A channel to `target` for calls to the proto service `service` (and `more_services`, served by the
    same process).

    `target` is host:port or any gRPC target naming many replicas (`ipv4:` list, `dns:///`), spread
    round robin. With `health_checked`, a replica that is not SERVING gets no calls (for channels
    between services; a client calling the gateway wants its answer even while it is degraded).
    Over TLS with `certificates` (by default the environment's RAGLINE_TLS_* settings), plaintext
    when they name no CA.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config([service, *more_services], health_checked=health_checked)),
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    credentials = (certificates or client_certificates()).credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


class ReopeningChannel:
    """A channel whose connection can be replaced under the stubs made on it: `reopen` after a rotated
    client certificate, and every stub's next call goes over a new connection presenting it.

    gRPC presents a channel's client certificate for the channel's whole life, and a generated stub
    binds its methods to the channel it is made with; this stands in for the channel, so that stubs
    held anywhere (the key cache, the ingest worker) follow the reopened one.
    """

    def __init__(
        self,
        target: str,
        services: Sequence[str],
        certificates: ClientCertificates,
        *,
        health_checked: bool = False,
    ) -> None:
        self._target, self._services, self._certificates = target, services, certificates
        self._health_checked = health_checked
        self.channel = self._open()
        """The current channel (for health checks and closing)."""
        self.generation = 0
        """How many times the channel was reopened."""

    def reopen(self) -> grpc.aio.Channel:
        """Opens a new channel with the certificate files as they are now; returns the old one, to close
        once its calls have finished. OSError or ValueError when the files are not a usable pair yet."""
        old = self.channel
        self.channel = self._open()
        self.generation += 1
        return old

    def _open(self) -> grpc.aio.Channel:
        return open_channel(
            self._target,
            *self._services,
            certificates=self._certificates,
            health_checked=self._health_checked,
        )

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Multicallable:
        """What a generated stub asks for; the same for the other three kinds."""
        return _Multicallable(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Multicallable:
        return _Multicallable(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> _Multicallable:
        return _Multicallable(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> _Multicallable:
        return _Multicallable(self, "stream_stream", method, args, kwargs)

    async def close(self, grace: float | None = None) -> None:
        """Closes the current channel."""
        await self.channel.close(grace)


class _Multicallable:
    """A stub's method on a `ReopeningChannel`: made again on the current channel after a reopen.

    With tracing on, its calls carry the trace context and get client spans (`ragline.tracing.outgoing_call`):
    done here, since every call between services goes through it, instead of by a grpc.aio client
    interceptor, which costs each call far more CPU than the tracing itself (see ragline.tracing).
    """

    def __init__(
        self, owner: ReopeningChannel, kind: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._owner, self._kind, self._method, self._args, self._kwargs = owner, kind, method, args, kwargs
        self._generation = -1
        self._callable: Any = None
        self._traced = tracing.traced_method(method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._generation != self._owner.generation:
            make = getattr(self._owner.channel, self._kind)
            self._callable = make(self._method, *self._args, **self._kwargs)
            self._generation = self._owner.generation
        if self._traced and tracing.enabled():
            return tracing.outgoing_call(self._method, self._callable, args, kwargs)
        return self._callable(*args, **kwargs)


def blocking_channel(target: str, certificates: ClientCertificates | None = None) -> grpc.Channel:
    """A blocking channel to `target` for one-off calls (health checks, the operator's key commands),
    over TLS with `certificates` (by default the environment's RAGLINE_TLS_* settings) when they name a CA."""
    credentials = (certificates or client_certificates()).credentials()
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


def downstream_timeout(context: grpc.aio.ServicerContext | None, ceiling: float) -> float:
    """The timeout for a call made while serving `context`: the caller's remaining time, at most `ceiling`.

    Raises DEADLINE_EXCEEDED when the caller's time is already spent, rather than starting
    work nobody waits for. Background work (no caller, `context` None) gets `ceiling`.
    """
    if context is None:
        return ceiling
    remaining = context.time_remaining()
    if remaining is None:
        return ceiling
    if remaining <= 0.001:
        raise DeadlineExceeded("the request's deadline was exceeded before the next stage could start")
    return min(float(remaining), ceiling)
