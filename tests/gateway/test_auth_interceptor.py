"""The authentication interceptor in a server with the audit and limits interceptors, as the gateway installs them.

Credentials here are JWTs from a JWKS file (keys made with `cryptography`), and API keys while the
retriever's key store is down; API keys through the real gateway are tested in tests/e2e/test_auth.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from policy_server import StandIn
from prometheus_client import REGISTRY
from test_jwt_auth import AUDIENCE, ISSUER, Signer

from ragline.api_keys import new_token
from ragline.config import load_config
from ragline.server import _Interceptor
from ragline.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from ragline.v1.api_key_store_service_pb2_grpc import ApiKeyStoreServiceStub
from ragline_gateway.api_key_cache import ApiKeyVerifier
from ragline_gateway.audit import AuditInterceptor
from ragline_gateway.auth import Authenticator, AuthInterceptor, RoleInterceptor
from ragline_gateway.config import GatewayConfig
from ragline_gateway.jwt_auth import JwtVerifier
from ragline_gateway.rate_limits import LimitsInterceptor


class NoRedis:
    """Dependencies before Redis is connected: the limits are kept in this process."""

    redis = None


SEARCH = gateway_service_pb2.SearchRequest(query=gateway_service_pb2.Query(text="q"))
DELETE = gateway_service_pb2.DeleteDocumentRequest(collection="docs", document_id="d1")


async def start(auth: str, jwks: Path | None = None) -> tuple[grpc.aio.Server, str]:
    env = {"GATEWAY_AUTH": auth, "GATEWAY_RATE_LIMIT_QUERY_PER_SECOND": "0.1"}
    if jwks is not None:
        env |= {
            "GATEWAY_JWT_JWKS_FILE": str(jwks),
            "GATEWAY_JWT_ISSUER": ISSUER,
            "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        }
    config = load_config(GatewayConfig, environ=env)
    # A key store nobody listens on: the retriever is down.
    keys = ApiKeyVerifier(
        ApiKeyStoreServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")), 5.0, 2.0
    )
    authenticator = Authenticator(keys, JwtVerifier.from_config(config)) if config.auth == "on" else None
    server = grpc.aio.server(
        interceptors=[
            _Interceptor(),
            AuthInterceptor(authenticator),
            AuditInterceptor(),
            RoleInterceptor(),
            LimitsInterceptor.from_config(config, NoRedis()),
        ]
    )
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(StandIn(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def signer() -> Signer:
    return Signer("key-1")


@pytest.fixture
async def stub(signer: Signer, tmp_path: Path) -> AsyncIterator[gateway_service_pb2_grpc.GatewayServiceStub]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [signer.jwk]}))
    server, address = await start("on", jwks)
    async with grpc.aio.insecure_channel(address) as channel:
        yield gateway_service_pb2_grpc.GatewayServiceStub(channel)
    await server.stop(None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def handled(method: str, code: str) -> float:
    labels = {"grpc_service": "ragline.v1.GatewayService", "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("ragline_grpc_server_handled_total", labels) or 0.0


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "ragline.audit"]


async def test_a_call_without_a_credential_is_unauthenticated_says_what_to_send_and_is_counted(
    stub: gateway_service_pb2_grpc.GatewayServiceStub,
) -> None:
    before = handled("Search", "UNAUTHENTICATED")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Search(SEARCH)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in (raised.value.details() or "")
    assert handled("Search", "UNAUTHENTICATED") == before + 1
    for metadata in (
        [("authorization", "Basic dXNlcjpwYXNz")],
        bearer("not-a-jwt"),
        bearer("rgl_aaaaaaaaaaaaaaaa_bbbb"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Search(SEARCH, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A well-formed key that cannot be checked may be fine: UNAVAILABLE, saying why, never UNAUTHENTICATED.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Search(SEARCH, metadata=bearer(str(new_token())))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "key store" in (raised.value.details() or "")


async def test_a_role_below_the_methods_is_denied_naming_both_roles(
    stub: gateway_service_pb2_grpc.GatewayServiceStub, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteDocument(DELETE, metadata=bearer(signer.token(role="reader")))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs the writer role" in (raised.value.details() or "")
    assert "has the reader role" in (raised.value.details() or "")
    # A refused write is in the audit log like any other call, with who tried it.
    (line,) = audit_lines(caplog)
    assert (line["credential_id"], line["role"], line["outcome"]) == (
        "service-a",
        "reader",
        "PERMISSION_DENIED",
    )
    reply = await stub.Search(SEARCH, metadata=bearer(signer.token(role="reader")))
    assert reply.hits[0].text == "hit"


async def test_audit_and_limits_see_the_caller_the_credential_names(
    stub: gateway_service_pb2_grpc.GatewayServiceStub, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    token = signer.token(role="writer", sub="indexer", tenant="acme")
    await stub.DeleteDocument(DELETE, metadata=bearer(token))
    (line,) = audit_lines(caplog)
    assert (line["tenant"], line["credential_id"], line["role"], line["outcome"]) == (
        "acme",
        "indexer",
        "writer",
        "OK",
    )
    assert token not in caplog.text
    # The query budget is one call per credential: a second Search by the same subject is refused,
    # while another subject still has its own.
    await stub.Search(SEARCH, metadata=bearer(token))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Search(SEARCH, metadata=bearer(token))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await stub.Search(SEARCH, metadata=bearer(signer.token(sub="other")))


async def test_with_auth_off_every_call_is_the_default_tenants_admin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    server, address = await start("off")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            await stub.DeleteDocument(DELETE)
            await stub.Search(SEARCH)
    finally:
        await server.stop(None)
    (line,) = audit_lines(caplog)
    assert (line["tenant"], line["credential_id"], line["role"]) == ("default", "anonymous", "admin")
