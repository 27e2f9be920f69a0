"""The shared server bootstrap: health, error mapping, metrics, config errors and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from toy_process import TOY, Toy, search_request

from ragline.channels import MAX_MESSAGE_BYTES
from ragline.server import LIVENESS_SERVICE, _Interceptor
from ragline.v1 import gateway_service_pb2_grpc


@pytest.mark.integration
def test_health_is_not_serving_until_started_and_follows_readiness(toy: Toy) -> None:
    seen = toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in seen
    toy.down_file.touch()
    toy.wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    assert "toy dependency is down" in toy.log.read_text()
    # Not ready, but alive: Kubernetes' liveness probe (deploy/kubernetes) must not restart it.
    assert toy.health(LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    toy.down_file.unlink()
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.integration
def test_errors_become_statuses_with_details_and_metrics_count_them(toy: Toy) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    with grpc.insecure_channel(toy.address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as invalid:
            stub.Search(search_request("invalid"), timeout=5)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(invalid.value)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "query"

        with pytest.raises(grpc.RpcError) as exhausted:
            stub.Search(search_request("exhausted"), timeout=5)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = error_details_pb2.RetryInfo()
        status = rpc_status.from_call(exhausted.value)
        assert status is not None and status.details[0].Unpack(retry)
        assert retry.retry_delay.ToMilliseconds() == 1500

        with pytest.raises(grpc.RpcError) as crashed:
            stub.Search(search_request("crash"), timeout=5)
        assert crashed.value.code() == grpc.StatusCode.INTERNAL
        details = crashed.value.details() or ""
        for leak in ("secret", "SELECT", "acme", "/srv/", "Traceback", "store.py"):
            assert leak not in details
        # The caller gets an error id; the log has it with the whole exception, for the operator.
        error_id = re.fullmatch(r"internal error \(error id ([0-9a-f]{16})\); .*", details)
        assert error_id is not None, details
        logged = toy.log.read_text()
        line = next(line for line in logged.splitlines() if error_id[1] in line)
        assert "unhandled RuntimeError" in line
        assert "Traceback" in logged.split(line, 1)[1]
        assert "SELECT * FROM api_keys WHERE tenant = 'acme'" in logged.split(line, 1)[1]
        stub.Search(search_request("0"), timeout=5)

    with urllib.request.urlopen(f"http://127.0.0.1:{toy.metrics_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    for code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL", "OK"):
        assert (
            f'ragline_grpc_server_handled_total{{grpc_code="{code}",grpc_method="Search",'
            f'grpc_service="ragline.v1.GatewayService"}} 1.0' in metrics
        )
    assert 'ragline_grpc_server_handling_seconds_count{grpc_method="Search"' in metrics


@pytest.mark.integration
def test_a_message_over_the_receive_limit_is_refused_before_the_handler(toy: Toy) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    with grpc.insecure_channel(toy.address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Search(search_request("0" + " " * MAX_MESSAGE_BYTES), timeout=30)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stub.Search(search_request("0"), timeout=5)


@pytest.mark.integration
async def test_sigterm_finishes_in_flight_calls_then_exits_cleanly(toy: Toy) -> None:
    toy.wait_health(health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(toy.address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.Search(search_request("1.5"), timeout=10))
        await asyncio.sleep(0.5)
        toy.process.send_signal(signal.SIGTERM)
        reply = await in_flight
        assert reply.hits[0].text == "done"
    assert await asyncio.to_thread(toy.process.wait, 10) == 0
    log = toy.log.read_text()
    assert "toy stop() called" in log and "toy stopped" in log


@pytest.mark.integration
def test_invalid_configuration_stops_the_service_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "TOY_PORT": "not-a-port", "TOY_DOWN_FILE": str(tmp_path / "x"), "LOG_LEVEL": "LOUD"}
    result = subprocess.run([sys.executable, str(TOY)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "TOY_PORT='not-a-port'" in result.stderr
    assert "LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR" in result.stderr


async def test_each_method_is_wrapped_once_and_unknown_ones_never() -> None:
    interceptor = _Interceptor()
    looked_up: list[str] = []
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        looked_up.append(details.method)
        return handler if details.method.endswith("/Known") else None

    known: Any = SimpleNamespace(method="/ragline.v1.Toy/Known")
    unknown: Any = SimpleNamespace(method="/ragline.v1.Toy/Unknown")
    first = await interceptor.intercept_service(continuation, known)
    assert first is not handler and first.unary_unary is not None
    assert await interceptor.intercept_service(continuation, known) is first
    assert await interceptor.intercept_service(continuation, unknown) is None
    assert await interceptor.intercept_service(continuation, unknown) is None
    assert looked_up == ["/ragline.v1.Toy/Known", "/ragline.v1.Toy/Unknown", "/ragline.v1.Toy/Unknown"]
