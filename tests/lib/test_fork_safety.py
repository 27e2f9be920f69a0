"""A Ragline process that serves gRPC can fork and exec a program (as the retriever does to start the
embedded PostgreSQL) without the child aborting in gRPC's fork handlers."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORKS = 300

# Runs in a fresh interpreter, so that `ragline` is imported before grpc as in every service.
_PROGRAM = f"""
import asyncio, subprocess
import ragline  # noqa: F401  (sets the gRPC fork policy before grpc is imported)
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stub = health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(f"127.0.0.1:{{port}}"))

    async def keep_calling():
        while True:
            await stub.Check(health_pb2.HealthCheckRequest())

    calls = asyncio.create_task(keep_calling())
    # preexec_fn makes subprocess fork rather than vfork, as pgserver's user= does.
    codes = [
        (await asyncio.to_thread(subprocess.run, ["true"], preexec_fn=lambda: None)).returncode
        for _ in range({FORKS})
    ]
    calls.cancel()
    print(sum(code != 0 for code in codes))

asyncio.run(main())
"""


@pytest.mark.integration
def test_forked_children_of_a_serving_process_do_not_abort() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, timeout=120, check=True
    )
    failed = int(result.stdout.strip().splitlines()[-1])
    assert failed == 0, (
        f"{failed} of {FORKS} forked children died before exec; stderr:\n{result.stderr[-2000:]}"
    )
