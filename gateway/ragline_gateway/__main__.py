"""Entry point: `python -m ragline_gateway` or `ragline-gateway`."""

from __future__ import annotations

import grpc

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import gateway_service_pb2_grpc
from ragline_gateway.audit import AuditInterceptor
from ragline_gateway.auth import Authenticator, AuthInterceptor
from ragline_gateway.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, GatewayConfig
from ragline_gateway.dependencies import Dependencies
from ragline_gateway.jwt_auth import JwtVerifier
from ragline_gateway.rate_limits import LimitsInterceptor
from ragline_gateway.service import GatewayServicer


def build(config: GatewayConfig) -> tuple[Lifecycle, list[Servicer], list[grpc.aio.ServerInterceptor]]:
    """The gateway servicer with the clients of its dependencies, and its interceptors.

    Authentication is outermost of the three: the audit log and the limits read the caller it
    binds, and the audit log is outside the limits so that the calls they refuse are logged too.
    """
    deps = Dependencies(config)
    gateway = GatewayServicer(config, deps)
    add = gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server
    authenticator = Authenticator(None, JwtVerifier.from_config(config)) if config.auth == "on" else None
    interceptors: list[grpc.aio.ServerInterceptor] = [
        AuthInterceptor(authenticator),
        AuditInterceptor(),
        LimitsInterceptor.from_config(config, deps),
    ]
    return gateway, [Servicer("ragline.v1.GatewayService", add, gateway)], interceptors


def main() -> None:
    """Runs the gateway until SIGTERM."""
    run_service("gateway", GatewayConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
