"""`Stack(replicas=...)` starts several processes of a service, each on its own port and log, and hands the
gateway one target listing them all; a replica restarts on its own port."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ragline import devstack
from ragline.channels import open_channel
from ragline.devstack import ServiceSpec, Stack
from ragline.embedded_redis import free_port
from ragline.embedded_standby import postmaster_pid, start_primary
from ragline.v1 import gateway_service_pb2, gateway_service_pb2_grpc

# Toy services (tests/lib/toy_service.py) stand in for a dependency and for the gateway that dials it.
TOY = ServiceSpec("toy", "TOY", "toy_service", free_port(), free_port())
TOY_GATEWAY = ServiceSpec("gateway", "TOYGATEWAY", "toy_service", 0, 0)


def test_replicas_name_known_services_and_counts_of_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="replicas"):
        Stack(state=tmp_path, replicas={"embeder": 2})
    with pytest.raises(ValueError, match="replicas"):
        Stack(state=tmp_path, replicas={"embedder": 0})


@pytest.mark.integration
async def test_replicas_get_their_own_ports_and_logs_and_the_gateway_a_target_listing_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devstack, "SERVICES", (TOY, TOY_GATEWAY))
    env = {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        "REDIS_URL": "redis://127.0.0.1:1/0",  # not used by the toy; set so that no Valkey is started
        "TOY_DOWN_FILE": str(tmp_path / "never"),
    }
    # Not free_ports: the first replica gets the service's own port, the others ports the system picks.
    stack = Stack(state=tmp_path / "state", services=("toy", "gateway"), env=env, replicas={"toy": 3})
    try:
        stack.start(timeout=60)
        toys = stack.instances["toy"]
        assert len(toys) == 3 and stack["toy"] is toys[0]
        assert toys[0].port == TOY.port
        ports = [port for toy in toys for port in (toy.port, toy.metrics_port)]
        assert 0 not in ports and len(set(ports)) == len(ports), ports
        assert len({toy.log_path for toy in toys}) == 3 and all(toy.log_path.exists() for toy in toys)
        target = stack["gateway"].env["TOY_ADDR"]
        assert target == "ipv4:" + ",".join(toy.address for toy in toys)

        async with open_channel(target, "ragline.v1.GatewayService", health_checked=True) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            for _ in range(15):
                await stub.Search(
                    gateway_service_pb2.SearchRequest(query=gateway_service_pb2.Query(text="0"))
                )
        searches = [
            toy.metric("ragline_grpc_server_handled_total", {"grpc_method": "Search"}) for toy in toys
        ]
        assert sum(searches) == 15 and min(searches) >= 3, searches

        replica = toys[1]
        address = replica.address
        replica.kill()
        replica.start()
        replica.wait_healthy(60)
        assert replica.address == address
    finally:
        stack.stop()
    assert all(toy.process is not None and toy.process.poll() is not None for toy in stack.all_processes())
    assert re.search(r"toy listening on", stack.instances["toy"][2].log_path.read_text())


@pytest.mark.integration
def test_a_stack_leaves_running_the_postgresql_its_caller_started(tmp_path: Path) -> None:
    primary = start_primary(tmp_path / "postgres")
    try:
        stack = Stack(state=tmp_path, services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
        stack.start()
        stack.stop()

        assert postmaster_pid(tmp_path / "postgres") is not None  # the caller's server: the caller stops it
    finally:
        primary.cleanup()
    assert postmaster_pid(tmp_path / "postgres") is None
