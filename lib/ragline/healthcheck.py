"""`python -m ragline.healthcheck HOST:PORT`: exits 0 when the service there reports SERVING.

The container health check of docker-compose.yml, in place of the `grpc_health_probe` binary; it dials
over (mutual) TLS when the RAGLINE_TLS_* settings name a CA, like every Ragline client.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ragline.channels import blocking_channel


def main() -> None:
    """Checks the standard gRPC health service of the address given as the only argument."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m ragline.healthcheck HOST:PORT")
    with blocking_channel(sys.argv[1]) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3.0)
        except grpc.RpcError as exc:
            raise SystemExit(f"unhealthy: {exc.code().name}") from None
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise SystemExit(f"unhealthy: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")


if __name__ == "__main__":
    main()
