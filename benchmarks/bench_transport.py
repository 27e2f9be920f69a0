"""`make bench` (transport): what mutual TLS costs a call between Ragline's services, plaintext and mTLS side by side.

Two retriever processes on one embedded PostgreSQL: one plaintext, one under mutual TLS with
certificates from `ragline.dev_certificates` (trustme). One client alternates rounds of the same
call to both, so that drift of the machine hits both alike, and reports:

- warm: p50/p99 of a unary call on an open connection (GetStoredCollection of a missing
  collection: an index lookup, so the transport is a large share), the per-call cost of encryption;
- connect: a new channel's first health check, which includes the TCP and, under mTLS, the
  TLS handshake with both certificates: what a client pays once per connection (the gateway keeps
  its channels open, and opens new ones only when its certificate rotates).

BENCH_TRANSPORT_ROUNDS sets the rounds (default 5).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.report import RESULTS_DIR, percentile, write_report
from ragline.channels import open_channel
from ragline.dev_certificates import environment, write_certificates
from ragline.devstack import Stack
from ragline.tls import ClientCertificates, ClientTlsConfig, client_certificates
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

ROUNDS = int(os.environ.get("BENCH_TRANSPORT_ROUNDS", "5"))
WARM_CALLS = 400
CONNECTS = 20
STATE = RESULTS_DIR / "state-transport"


async def _warm(channel: grpc.aio.Channel) -> list[float]:
    stub = pb_grpc.RetrieverServiceStub(channel)
    request = pb.GetStoredCollectionRequest(tenant="bench", name="missing")
    latencies = []
    for _ in range(WARM_CALLS):
        started = time.perf_counter()
        try:
            await stub.GetStoredCollection(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        latencies.append(time.perf_counter() - started)
    return latencies


async def _connect(address: str, certificates: ClientCertificates) -> list[float]:
    latencies = []
    for _ in range(CONNECTS):
        started = time.perf_counter()
        async with open_channel(address, "grpc.health.v1.Health", certificates=certificates) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies


async def _bench(targets: dict[str, tuple[str, ClientCertificates]]) -> list[dict[str, Any]]:
    warm: dict[str, list[float]] = {name: [] for name in targets}
    connect: dict[str, list[float]] = {name: [] for name in targets}
    channels = {
        name: open_channel(a, "ragline.v1.RetrieverService", certificates=c)
        for name, (a, c) in targets.items()
    }
    for name in targets:
        await _warm(channels[name])  # connect and warm up before measuring
    for round_number in range(ROUNDS):
        order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
        for name in order:
            warm[name] += await _warm(channels[name])
            connect[name] += await _connect(*targets[name])
    for channel in channels.values():
        await channel.close()
    return [
        {
            "transport": name,
            "case": case,
            "calls": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
        }
        for name in targets
        for case, values in (("warm", warm[name]), ("connect", connect[name]))
    ]


def main() -> None:
    """Starts the two retrievers, measures, prints the table and writes bench-results/transport.json."""
    files = write_certificates(STATE / "tls")
    plain = Stack(state=STATE / "plain", services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
    plain.start()
    try:
        lines = (STATE / "plain" / "postgres" / "postmaster.pid").read_text().splitlines()
        database_url = f"postgresql://postgres@/postgres?host={lines[4].strip()}&port={lines[3].strip()}"
        mtls_env = {"DATABASE_URL": database_url, **environment(files)}
        mtls = Stack(state=STATE / "mtls", services=("retriever",), free_ports=True, env=mtls_env)
        mtls.start()
        try:
            targets = {
                "plaintext": (plain["retriever"].address, ClientCertificates(ClientTlsConfig())),
                "mtls": (mtls["retriever"].address, client_certificates(mtls.base_env)),
            }
            rows = asyncio.run(_bench(targets))
        finally:
            mtls.stop()
    finally:
        plain.stop()
    p50 = {(row["transport"], row["case"]): row["p50_ms"] for row in rows}
    write_report(
        "transport",
        rows,
        {
            "mtls_warm_overhead_p50_ms": round(p50["mtls", "warm"] - p50["plaintext", "warm"], 4),
            "mtls_connect_overhead_p50_ms": round(p50["mtls", "connect"] - p50["plaintext", "connect"], 4),
        },
    )


if __name__ == "__main__":
    main()
