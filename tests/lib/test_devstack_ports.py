"""`Stack(free_ports=True)` lets each service bind a port the system picks, so stacks started together never
collide, and a restarted service comes back on the same port."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragline import devstack
from ragline.devstack import ServiceSpec, Stack

pytestmark = pytest.mark.integration

TOY = ServiceSpec("toy", "TOY", "toy_service", 50099, 9199)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_stacks_started_together_get_distinct_ports_and_keep_them_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack, "SERVICES", (TOY,))
    # Another process takes whatever port is picked before the service binds it: the race of picking a
    # free port, releasing it and handing it over. The stack must not depend on a port picked in advance.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    monkeypatch.setattr(devstack, "free_port", lambda: taken.getsockname()[1], raising=False)
    env = {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # not used by the toy; set so that no Valkey is started
        "TOY_DOWN_FILE": str(tmp_path / "never"),
    }
    stacks = [
        Stack(state=tmp_path / f"stack{i}", services=("toy",), free_ports=True, env=env) for i in range(3)
    ]
    threads = [threading.Thread(target=stack.start, args=(60,)) for stack in stacks]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        toys = [stack["toy"] for stack in stacks]
        ports = [port for toy in toys for port in (toy.port, toy.metrics_port)]
        assert 0 not in ports and len(set(ports)) == len(ports), ports
        assert all(_serving(toy.address) for toy in toys)
        assert toys[0].metric("ragline_grpc_server_handled_total", {"grpc_method": "Check"}) > 0

        address = toys[0].address
        toys[0].stop()
        toys[0].start()
        toys[0].wait_healthy(60)
        assert toys[0].address == address
    finally:
        for stack in stacks:
            stack.stop()
        taken.close()
