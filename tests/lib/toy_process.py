"""Runs tests/lib/toy_service.py as a process, so bootstrap tests can call it and read its health and metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragline.embedded_redis import free_port
from ragline.v1 import gateway_service_pb2

TOY = Path(__file__).with_name("toy_service.py")


def search_request(text: str) -> gateway_service_pb2.SearchRequest:
    """A Search for the toy service, whose text says how it fails or how long it sleeps."""
    return gateway_service_pb2.SearchRequest(query=gateway_service_pb2.Query(text=text))


class Toy:
    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.down_file = tmp_path / "down"
        self.log = tmp_path / "toy.log"
        env = {
            **os.environ,
            "TOY_PORT": str(self.port),
            "TOY_METRICS_PORT": str(self.metrics_port),
            "TOY_DOWN_FILE": str(self.down_file),
            "TOY_SHUTDOWN_GRACE_SECONDS": "5",
            **(env or {}),
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(TOY)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.address = f"127.0.0.1:{self.port}"

    def health(self, service: str = "") -> int | None:
        """The status the toy reports for `service` (its overall one by default); None if it does not answer."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                return int(
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                    .status
                )
            except grpc.RpcError:
                return None

    def wait_health(self, status: int, timeout: float = 15) -> list[int | None]:
        seen: list[int | None] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.append(self.health())
            if seen[-1] == status:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"health never became {status}; saw {seen[-5:]}; log:\n{self.log.read_text()}")

    def metrics(self) -> str:
        """The text of the toy's /metrics page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())
