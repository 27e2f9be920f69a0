"""Channels to a dependency that was down use it again as soon as it is back; the service config they use."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragline.channels import KEEPALIVE_TIME_MS, NOT_RETRIED, SERVER_OPTIONS, open_channel, service_config
from ragline.embedded_redis import free_port
from ragline.v1 import (
    admin_service_pb2,
    api_key_store_service_pb2,
    conversation_store_service_pb2,
    gateway_service_pb2,
    ingest_queue_service_pb2,
    retriever_service_pb2,
)


async def test_a_channel_reconnects_at_once_when_its_server_is_back() -> None:
    address = f"127.0.0.1:{free_port()}"
    request = health_pb2.HealthCheckRequest()
    async with open_channel(address, "grpc.health.v1.Health") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # A long outage: every failed connection attempt makes gRPC wait longer before the next one.
        outage_ends = time.monotonic() + 12
        while time.monotonic() < outage_ends:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Check(request, timeout=1)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(0.2)

        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(address)
        await server.start()
        try:
            back = time.monotonic()
            while True:
                try:
                    await stub.Check(request, timeout=1)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    await asyncio.sleep(0.05)
            waited = time.monotonic() - back
            assert waited < 1.5, f"calls failed for {waited:.1f} s after the server was back"
        finally:
            await server.stop(0)


def test_the_service_config_retries_unavailable_except_for_writes_that_a_retry_could_apply_twice() -> None:
    config = json.loads(
        service_config(["ragline.v1.IngestQueueService", "ragline.v1.RetrieverService"], health_checked=True)
    )
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": ""}
    retried, once = config["methodConfig"]
    assert retried["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {f"{n['service']}/{n['method']}" for n in once["name"]} == {
        path
        for path in NOT_RETRIED
        if path.startswith(("ragline.v1.IngestQueueService/", "ragline.v1.RetrieverService/"))
    }
    assert "retryPolicy" not in once
    unchecked = json.loads(service_config(["ragline.v1.GatewayService"], health_checked=False))
    assert "healthCheckConfig" not in unchecked


def test_every_method_not_retried_exists() -> None:
    modules = (
        admin_service_pb2,
        api_key_store_service_pb2,
        conversation_store_service_pb2,
        gateway_service_pb2,
        ingest_queue_service_pb2,
        retriever_service_pb2,
    )
    services = {s.full_name: s for m in modules for s in m.DESCRIPTOR.services_by_name.values()}
    for path in NOT_RETRIED:
        service, _, method = path.partition("/")
        assert method in services[service].methods_by_name, path


def test_the_server_permits_client_keepalive_pings_with_room_for_timer_jitter() -> None:
    # A ping that arrives a little earlier than the server's minimum interval is a strike; three
    # strikes close the connection with too_many_pings. The clients' pings must clear it by a margin.
    permitted = dict(SERVER_OPTIONS)["grpc.http2.min_recv_ping_interval_without_data_ms"]
    assert permitted <= KEEPALIVE_TIME_MS // 2
