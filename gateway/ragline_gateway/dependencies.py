"""The gateway's connections to its dependencies, and their health.

The gateway needs the embedder and the retriever to do anything (they decide its
readiness); the generator only for Ask; Redis is optional (no cache while it is down).
A gauge per dependency tells SREs which one is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from ragline.channels import ReopeningChannel
from ragline.config import state_dir
from ragline.embedded_redis import EmbeddedRedis
from ragline.errors import from_rpc_error
from ragline.tls import client_certificates
from ragline.v1 import (
    api_key_store_service_pb2_grpc,
    conversation_store_service_pb2_grpc,
    embedder_service_pb2_grpc,
    generator_service_pb2_grpc,
    ingest_queue_service_pb2_grpc,
    retriever_service_pb2_grpc,
)
from ragline_gateway.config import GatewayConfig
from ragline_gateway.embedders import Embedders

log = logging.getLogger(__name__)
T = TypeVar("T")

DEPENDENCY_UP = Gauge(
    "ragline_gateway_dependency_up",
    "1 when the dependency answered its last health check, 0 when it did not.",
    ["dependency"],
)
_HEALTH_TIMEOUT_SECONDS = 2.0
# How long calls under way keep their old channel after a certificate rotation: the longest a call
# (a streamed answer) takes.
_ROTATION_GRACE_SECONDS = 120.0


class Dependencies:
    """Channels and stubs to the embedder, retriever (its ingest queue, key store and conversation store) and
    generator, and Redis.

    Each channel's target may name many replicas (see ragline.channels): calls go round robin to the
    ones whose health is SERVING.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._certificates = client_certificates()
        self._retiring: set[asyncio.Task[None]] = set()
        """Old channels closing after a certificate rotation, once their calls have finished."""
        self._channels = {
            "embedder": ReopeningChannel(
                config.embedder_addr, ["ragline.v1.EmbedderService"], self._certificates, health_checked=True
            ),
            "retriever": ReopeningChannel(
                config.retriever_addr,
                [
                    "ragline.v1.RetrieverService",
                    "ragline.v1.IngestQueueService",
                    "ragline.v1.ApiKeyStoreService",
                    "ragline.v1.ConversationStoreService",
                ],
                self._certificates,
                health_checked=True,
            ),
            "generator": ReopeningChannel(
                config.generator_addr,
                ["ragline.v1.GeneratorService"],
                self._certificates,
                health_checked=True,
            ),
        }
        # Embedders of other models: optional, like the generator (only their collections need them).
        for target in config.more_embedder_addrs.split():
            self._channels[f"embedder {target}"] = ReopeningChannel(
                target, ["ragline.v1.EmbedderService"], self._certificates, health_checked=True
            )
        self.embedder = embedder_service_pb2_grpc.EmbedderServiceStub(self._channels["embedder"])
        self.embedders = Embedders(
            self.embedder,
            [
                embedder_service_pb2_grpc.EmbedderServiceStub(channel)
                for name, channel in self._channels.items()
                if name.startswith("embedder ")
            ],
        )
        self.retriever = retriever_service_pb2_grpc.RetrieverServiceStub(self._channels["retriever"])
        # The ingest queue is a service of its own in the retriever's process, on the same channel.
        self.ingest_queue = ingest_queue_service_pb2_grpc.IngestQueueServiceStub(self._channels["retriever"])
        # So is the API key store.
        self.api_keys = api_key_store_service_pb2_grpc.ApiKeyStoreServiceStub(self._channels["retriever"])
        # And the conversation store.
        self.conversations = conversation_store_service_pb2_grpc.ConversationStoreServiceStub(
            self._channels["retriever"]
        )
        self.generator = generator_service_pb2_grpc.GeneratorServiceStub(self._channels["generator"])
        self._embedded_redis: EmbeddedRedis | None = None
        self.redis: aioredis.Redis | None = None
        self.redis_up = False

    async def _reopen_if_rotated(self) -> None:
        """Opens new channels when the client certificate files changed; calls under way finish on the old ones.

        A connection presents the certificate it was opened with, so only a new channel presents a
        renewed one; every stub moves to the new channels at its next call.
        """
        if not self._certificates.rotated():
            return
        try:
            old = [channel.reopen() for channel in self._channels.values()]
        except (OSError, ValueError) as exc:
            # Mid-rotation (the key written, not yet the certificate): the next check tries again.
            log.warning("new client certificate not usable yet, keeping the current channels: %s", exc)
            return
        log.info("client certificate files changed: opened new channels to the services")
        for channel in old:
            # In the background: the readiness loop that runs this must not wait for a long call.
            task = asyncio.create_task(channel.close(grace=_ROTATION_GRACE_SECONDS))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def start(self) -> None:
        """Connects to Redis, starting the embedded server first when REDIS_URL is unset."""
        url = self.config.redis_url
        if url is None:
            self._embedded_redis = EmbeddedRedis(state_dir() / "valkey-gateway")
            url = await asyncio.to_thread(self._embedded_redis.start)
            log.info("REDIS_URL is unset: started embedded Valkey at %s", url)
        # Short timeouts: a slow or dead Redis must cost a request milliseconds, not seconds.
        self.redis = aioredis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self.redis_up = await self._redis_up()

    async def _serving(self, name: str) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channels[name])
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=_HEALTH_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def _redis_up(self) -> bool:
        if self.redis is None:
            return False
        try:
            return bool(await self.redis.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def check(self) -> None:
        """Updates the dependency gauges; raises while the embedder or retriever is down.

        Runs every few seconds, so it is also where a rotated client certificate is picked up.
        """
        await self._reopen_if_rotated()
        names = list(self._channels)
        results = await asyncio.gather(*(self._serving(n) for n in names), self._redis_up())
        more: list[bool] = []
        for name, up in zip([*names, "redis"], results, strict=True):
            if name.startswith("embedder "):
                more.append(up)
            else:
                DEPENDENCY_UP.labels(name).set(1 if up else 0)
        if more:
            # One label for the embedders of other models, whatever their number: labels stay bounded.
            DEPENDENCY_UP.labels("more_embedders").set(1 if all(more) else 0)
        self.redis_up = results[-1]
        down = [n for n, up in zip(names, results, strict=False) if not up and n in ("embedder", "retriever")]
        if down:
            raise RuntimeError(f"{' and '.join(down)} not serving")

    async def close(self) -> None:
        """Closes the channels and Redis, and stops the embedded Redis if this process started it."""
        for channel in self._channels.values():
            await channel.close()
        for task in list(self._retiring):
            task.cancel()
        if self.redis is not None:
            await self.redis.aclose()
        if self._embedded_redis is not None:
            await asyncio.to_thread(self._embedded_redis.stop)


async def call(dependency: str, awaitable: Awaitable[T]) -> T:
    """Awaits a downstream call, turning its failure into an error that names the dependency."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(dependency, exc) from None
