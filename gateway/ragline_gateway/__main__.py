"""Entry point: `python -m ragline_gateway` or `ragline-gateway`."""

from __future__ import annotations

from ragline.config import ServerConfig, load_config
from ragline.server import Servicer, configure_logging, run, serve
from ragline.v1 import gateway_service_pb2_grpc
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies
from ragline_gateway.service import GatewayServicer


async def _main() -> None:
    server_config = ServerConfig.from_env("GATEWAY", port=50051, metrics_port=9101)
    config = load_config(GatewayConfig)
    configure_logging(server_config.log_level)
    deps = Dependencies(config)
    gateway = GatewayServicer(config, deps)
    servicer = Servicer(
        "ragline.v1.GatewayService", gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server, gateway
    )
    await serve("gateway", server_config, [servicer], gateway)


def main() -> None:
    """Runs the gateway until SIGTERM."""
    run(_main)


if __name__ == "__main__":
    main()
