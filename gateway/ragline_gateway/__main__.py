"""Entry point: `python -m ragline_gateway` or `ragline-gateway`."""

from __future__ import annotations

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import gateway_service_pb2_grpc
from ragline_gateway.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, GatewayConfig
from ragline_gateway.dependencies import Dependencies
from ragline_gateway.service import GatewayServicer


def build(config: GatewayConfig) -> tuple[Lifecycle, list[Servicer]]:
    """The gateway servicer, with the clients of its dependencies."""
    gateway = GatewayServicer(config, Dependencies(config))
    add = gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server
    return gateway, [Servicer("ragline.v1.GatewayService", add, gateway)]


def main() -> None:
    """Runs the gateway until SIGTERM."""
    run_service("gateway", GatewayConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
