"""Rate limits, the ingest byte budget and the Ask cap: refused with RetryInfo, shared by replicas, kept without Redis.

Limits run against the real embedded Valkey, through a real gRPC server with the interceptors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from policy_server import caller, start_server
from prometheus_client import REGISTRY

from ragline.config import load_config
from ragline.embedded_redis import EmbeddedRedis
from ragline.errors import ResourceExhausted
from ragline.v1 import common_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from ragline_gateway import rate_limits
from ragline_gateway.config import GatewayConfig
from ragline_gateway.principal import Principal, RateClass, Role
from ragline_gateway.rate_limits import Limits, LimitsInterceptor, ask_slots_key

pytestmark = pytest.mark.integration

ALICE = Principal("acme", Role.WRITER, "key-alice")


@dataclass
class Holder:
    """Stands for Dependencies: the Redis client, once connected."""

    redis: aioredis.Redis | None


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(valkey: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(valkey.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    await client.flushall()
    yield client
    await client.aclose()


def limits_config(**env: str) -> GatewayConfig:
    return load_config(GatewayConfig, environ=env)


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo")


def refusals(limit: str) -> float:
    return REGISTRY.get_sample_value("ragline_gateway_rate_limited_total", {"limit": limit}) or 0.0


def search() -> gateway_service_pb2.SearchRequest:
    return gateway_service_pb2.SearchRequest(query=gateway_service_pb2.Query(text="q"))


async def test_over_the_rate_a_call_is_refused_with_a_delay_and_passes_after_it(
    client: aioredis.Redis,
) -> None:
    config = limits_config(GATEWAY_RATE_LIMIT_QUERY_PER_SECOND="4", GATEWAY_RATE_LIMIT_BURST_SECONDS="0.5")
    server, _, address = await start_server([LimitsInterceptor.from_config(config, Holder(client))])
    refused_before = refusals("query")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            alice = caller("acme", "key-alice")
            await stub.Search(search(), metadata=alice)
            await stub.Search(search(), metadata=alice)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Search(search(), metadata=alice)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "GATEWAY_RATE_LIMIT_QUERY_PER_SECOND" in (raised.value.details() or "")
            delay = retry_delay(raised.value)
            assert 0 < delay <= 0.25 + 0.01
            # Another credential has a budget of its own; a call with no principal (health, reflection) is not limited.
            await stub.Search(search(), metadata=caller("acme", "key-bob"))
            await stub.Search(search())
            await asyncio.sleep(delay)
            await stub.Search(search(), metadata=alice)
            # Other rate classes are limited separately (and not at all here).
            for _ in range(5):
                await stub.DeleteDocument(
                    gateway_service_pb2.DeleteDocumentRequest(document_id="d"), metadata=alice
                )
    finally:
        await server.stop(None)
    assert refusals("query") == refused_before + 1


async def test_two_replicas_sharing_redis_share_one_budget(
    client: aioredis.Redis, valkey: EmbeddedRedis
) -> None:
    config = limits_config(GATEWAY_RATE_LIMIT_WRITE_PER_SECOND="1", GATEWAY_RATE_LIMIT_BURST_SECONDS="3")
    other = aioredis.from_url(valkey.url)
    try:
        one, two = Limits(config, Holder(client)), Limits(config, Holder(other))
        await one.check_rate(ALICE, RateClass.WRITE)
        await two.check_rate(ALICE, RateClass.WRITE)
        await one.check_rate(ALICE, RateClass.WRITE)
        with pytest.raises(ResourceExhausted) as raised:
            await two.check_rate(ALICE, RateClass.WRITE)
        assert 0.5 < (raised.value.retry_after or 0) <= 1.0
        # The same credential id in another tenant is another credential.
        await two.check_rate(Principal("globex", Role.WRITER, "key-alice"), RateClass.WRITE)
    finally:
        await other.aclose()


async def test_with_redis_down_calls_go_on_under_each_replicas_own_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limits, "REDIS_RETRY_SECONDS", 0.3)
    valkey = EmbeddedRedis(tmp_path / "valkey")
    valkey.start()
    client = aioredis.from_url(valkey.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    config = limits_config(GATEWAY_RATE_LIMIT_QUERY_PER_SECOND="2", GATEWAY_RATE_LIMIT_BURST_SECONDS="1")
    server, _, address = await start_server([LimitsInterceptor.from_config(config, Holder(client))])
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            alice = caller("acme", "key-alice")
            await stub.Search(search(), metadata=alice)
            valkey.stop()
            started = time.perf_counter()
            await stub.Search(search(), metadata=alice)
            await stub.Search(search(), metadata=alice)
            # The local bucket started full: two calls, then the limit holds without Redis too.
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Search(search(), metadata=alice)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.perf_counter() - started < 1.0
            # Redis back (empty) on the same port: after the retry delay the shared buckets decide again.
            valkey.start()
            await asyncio.sleep(0.6)
            await stub.Search(search(), metadata=alice)
            assert await client.keys("ragline:v1:limits:query:*")
    finally:
        await server.stop(None)
        await client.aclose()
        valkey.stop()


async def test_a_tenant_has_at_most_its_cap_of_asks_in_progress(client: aioredis.Redis) -> None:
    config = limits_config(GATEWAY_ASK_CONCURRENCY_PER_TENANT="1")
    server, servicer, address = await start_server([LimitsInterceptor.from_config(config, Holder(client))])
    ask = gateway_service_pb2.AskRequest(query=gateway_service_pb2.Query(text="q"))
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            stream = stub.AskStream(
                gateway_service_pb2.AskStreamRequest(query=gateway_service_pb2.Query(text="q")),
                metadata=caller("acme", "key-alice"),
            )
            assert (await stream.read()).delta == "first"
            assert await client.zcard(ask_slots_key("acme")) == 1
            # The cap is the tenant's: its other keys wait too, another tenant does not.
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Ask(ask, metadata=caller("acme", "key-bob"))
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "GATEWAY_ASK_CONCURRENCY_PER_TENANT" in (raised.value.details() or "")
            assert retry_delay(raised.value) == 1.0
            await stub.Ask(ask, metadata=caller("globex", "key-carol"))
            # Cancelling the stream gives the slot back.
            stream.cancel()
            for _ in range(100):
                if servicer.streams_in_progress == 0 and await client.zcard(ask_slots_key("acme")) == 0:
                    break
                await asyncio.sleep(0.02)
            assert await client.zcard(ask_slots_key("acme")) == 0
            await stub.Ask(ask, metadata=caller("acme", "key-bob"))
            assert await client.zcard(ask_slots_key("acme")) == 0
    finally:
        await server.stop(None)


async def test_a_crashed_replicas_ask_slot_comes_back_when_its_lease_runs_out(client: aioredis.Redis) -> None:
    config = limits_config(GATEWAY_ASK_CONCURRENCY_PER_TENANT="1", GATEWAY_ASK_LEASE_SECONDS="1")
    # What a replica that died holding a slot leaves behind: a lease that nobody renews.
    seconds, micros = await client.time()
    await client.zadd(ask_slots_key("acme"), {"dead-replica": seconds + micros / 1e6 + 1.0})
    limits = Limits(config, Holder(client))
    with pytest.raises(ResourceExhausted):
        async with limits.ask_slot(ALICE):
            pass
    await asyncio.sleep(1.1)
    async with limits.ask_slot(ALICE):
        # A live slot is renewed while it is held, so it outlives its lease.
        await asyncio.sleep(1.5)
        assert await client.zcard(ask_slots_key("acme")) == 1
        with pytest.raises(ResourceExhausted):
            async with Limits(config, Holder(client)).ask_slot(ALICE):
                pass


async def test_document_bytes_per_minute_are_limited_across_the_ingest_methods(
    client: aioredis.Redis,
) -> None:
    config = limits_config(GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE="1200")
    server, _, address = await start_server([LimitsInterceptor.from_config(config, Holder(client))])

    def documents(*sizes: int) -> list[common_pb2.DocumentContent]:
        return [
            common_pb2.DocumentContent(document_id=f"d{i}", content=b"x" * n) for i, n in enumerate(sizes)
        ]

    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            alice = caller("acme", "key-alice", "writer")
            await stub.IngestDocuments(
                gateway_service_pb2.IngestDocumentsRequest(documents=documents(300, 300)), metadata=alice
            )
            await stub.CreateIngestJob(
                gateway_service_pb2.CreateIngestJobRequest(documents=documents(400)), metadata=alice
            )

            async def upload() -> AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest]:
                for document in documents(100, 100, 100):
                    yield gateway_service_pb2.UploadIngestDocumentsRequest(document=document)

            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.UploadIngestDocuments(upload(), metadata=alice)
            # 1000 bytes spent, 200 left: the upload's third document is over the budget.
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE" in (raised.value.details() or "")
            assert 4.0 < retry_delay(raised.value) <= 5.0  # 100 bytes at 20 bytes per second
            # A request larger than the minute's budget is not refused forever: it passes on a full budget.
            bob = caller("acme", "key-bob", "writer")
            await stub.IngestDocuments(
                gateway_service_pb2.IngestDocumentsRequest(documents=documents(5000)), metadata=bob
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.IngestDocuments(
                    gateway_service_pb2.IngestDocumentsRequest(documents=documents(1)), metadata=bob
                )
            assert retry_delay(raised.value) > 60
    finally:
        await server.stop(None)
