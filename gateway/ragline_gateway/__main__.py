"""Entry point: `python -m ragline_gateway` or `ragline-gateway`."""

from __future__ import annotations

import grpc

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import admin_service_pb2_grpc, gateway_service_pb2_grpc
from ragline_gateway.admin_service import AdminServicer
from ragline_gateway.api_key_cache import ApiKeyVerifier
from ragline_gateway.audit import AuditInterceptor
from ragline_gateway.auth import Authenticator, AuthInterceptor, RoleInterceptor
from ragline_gateway.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, GatewayConfig
from ragline_gateway.dependencies import Dependencies
from ragline_gateway.jwt_auth import JwtVerifier
from ragline_gateway.rate_limits import LimitsInterceptor
from ragline_gateway.service import GatewayServicer


def build(config: GatewayConfig) -> tuple[Lifecycle, list[Servicer], list[grpc.aio.ServerInterceptor]]:
    """The gateway and admin servicers with the clients of their dependencies, and the gateway's interceptors.

    Authentication is outermost: the others read the caller it binds. The audit log is outside the
    role check and the limits, so that the calls they refuse are logged too.
    """
    deps = Dependencies(config)
    gateway = GatewayServicer(config, deps)
    keys = ApiKeyVerifier(deps.api_keys, config.api_key_cache_seconds, config.retrieve_timeout_seconds)
    authenticator = Authenticator(keys, JwtVerifier.from_config(config)) if config.auth == "on" else None
    interceptors: list[grpc.aio.ServerInterceptor] = [
        AuthInterceptor(authenticator),
        AuditInterceptor(),
        RoleInterceptor(),
        LimitsInterceptor.from_config(config, deps),
    ]
    admin = AdminServicer(config, deps, keys, gateway.workers)
    return (
        gateway,
        [
            Servicer(
                "ragline.v1.GatewayService",
                gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server,
                gateway,
            ),
            Servicer(
                "ragline.v1.AdminService", admin_service_pb2_grpc.add_AdminServiceServicer_to_server, admin
            ),
        ],
        interceptors,
    )


def main() -> None:
    """Runs the gateway until SIGTERM."""
    run_service("gateway", GatewayConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
