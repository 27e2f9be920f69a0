"""A channel to many replicas (ragline.channels): round robin over the healthy ones, none to a replica that
reports NOT_SERVING until it is back, none to a replica killed with SIGKILL, and no call lost to either.

The replicas are toy services run by ragline.server, so client-side health checking goes through the
server's own interceptors (its Watch stream) exactly as the real services'.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toy_process import Toy, search_request

from ragline.channels import open_channel
from ragline.v1 import gateway_service_pb2_grpc

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CALLS = 40


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Toy]]:
    """Two toy replicas, SERVING; killed after the test if still running."""
    toys = []
    for i in range(2):
        folder = tmp_path / f"replica-{i}"
        folder.mkdir()
        toys.append(Toy(folder))
    for toy in toys:
        toy.wait_health(SERVING, timeout=60)
    yield toys
    for toy in toys:
        if toy.process.poll() is None:
            toy.process.kill()
            toy.process.wait()


def _searches(toy: Toy) -> float:
    """How many Search calls the toy has answered, from its /metrics."""
    pattern = r'ragline_grpc_server_handled_total\{[^}]*grpc_method="Search"[^}]*\} ([0-9.e+]+)'
    return sum(float(value) for value in re.findall(pattern, toy.metrics()))


async def _search_all(stub: gateway_service_pb2_grpc.GatewayServiceStub, calls: int = CALLS) -> None:
    """`calls` Searches one after another; every one must succeed."""
    for _ in range(calls):
        await stub.Search(search_request("0"), timeout=10)


def _target(toys: list[Toy]) -> str:
    return "ipv4:" + ",".join(toy.address for toy in toys)


async def test_calls_are_spread_round_robin(replicas: list[Toy]) -> None:
    async with open_channel(_target(replicas), "ragline.v1.GatewayService", health_checked=True) as channel:
        await _search_all(gateway_service_pb2_grpc.GatewayServiceStub(channel))
    counts = [_searches(toy) for toy in replicas]
    assert sum(counts) == CALLS
    # Round robin alternates; a replica connected a moment later may miss the first call or two.
    assert min(counts) >= CALLS / 2 - 3, counts


async def test_a_not_serving_replica_gets_no_calls_and_gets_them_again_when_it_is_back(
    replicas: list[Toy],
) -> None:
    sick, well = replicas
    async with open_channel(_target(replicas), "ragline.v1.GatewayService", health_checked=True) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        await _search_all(stub)
        sick.down_file.touch()
        sick.wait_health(NOT_SERVING)
        # The channel's Watch on the replica hears NOT_SERVING as soon as the server sets it.
        await asyncio.sleep(0.5)
        before = [_searches(toy) for toy in replicas]
        await _search_all(stub)
        after = [_searches(toy) for toy in replicas]
        assert after[0] == before[0], "a NOT_SERVING replica got calls"
        assert after[1] == before[1] + CALLS

        sick.down_file.unlink()
        sick.wait_health(SERVING)

        async def back() -> bool:
            await stub.Search(search_request("0"), timeout=10)
            return _searches(sick) > after[0]

        deadline = time.monotonic() + 10
        while not await back():
            assert time.monotonic() < deadline, "the replica got no calls after it was SERVING again"
    assert well.process.poll() is None


async def test_a_killed_replica_is_dropped_and_no_call_fails(replicas: list[Toy]) -> None:
    dead, alive = replicas
    async with open_channel(_target(replicas), "ragline.v1.GatewayService", health_checked=True) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        await _search_all(stub)
        dead.process.kill()
        dead.process.wait()
        before = _searches(alive)
        # Calls right after the kill: the first to the dead replica fails over to the live one (retry of UNAVAILABLE).
        await _search_all(stub)
        assert _searches(alive) == before + CALLS


async def test_health_watch_streams_status_changes_through_the_servers_interceptors(toy: Toy) -> None:
    toy.wait_health(SERVING, timeout=60)
    async with grpc.aio.insecure_channel(toy.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        statuses = [(await watch.read()).status]
        toy.down_file.touch()
        statuses.append((await watch.read()).status)
        watch.cancel()
    assert statuses == [SERVING, NOT_SERVING]
