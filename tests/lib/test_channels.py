"""Channels to a dependency that was down use it again as soon as it is back."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ragline.channels import open_channel
from ragline.embedded_redis import free_port


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
