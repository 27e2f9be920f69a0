"""Authentication through the real gateway: API keys and JWTs, roles, revocation across replicas, limits, audit.

The session stack's gateway runs with GATEWAY_AUTH=on and the admin key `Stack` made for tenant
`default`; a second gateway process (`replica`), sharing the stack's retriever and Redis, also
accepts JWTs from a JWKS file (keys made here with `cryptography`), limits reads per key, and
caches keys for CACHE_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from jwt.algorithms import ECAlgorithm

from ragline.api_keys import ApiKeyToken, new_token, parse_token, store_new_key
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import ServiceProcess, Stack
from ragline.v1 import admin_service_pb2, gateway_service_pb2

pytestmark = pytest.mark.integration

CACHE_SECONDS = 2.0
ISSUER = "https://idp.example.test/"
AUDIENCE = "ragline"
SERVICES = [
    gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
]


class IdentityProvider:
    """An EC key pair that signs JWTs, and the JWKS file holding its public half."""

    def __init__(self, folder: Path) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        public.update(kid="idp-1", use="sig", alg="ES256")
        self.jwks = folder / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [public]}))

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.private, algorithm="ES256", headers={"kid": "idp-1"})


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> IdentityProvider:
    return IdentityProvider(tmp_path_factory.mktemp("idp"))


@pytest.fixture(scope="module")
def replica(stack: Stack, idp: IdentityProvider) -> Iterator[ServiceProcess]:
    env = {
        "GATEWAY_API_KEY_CACHE_SECONDS": str(CACHE_SECONDS),
        "GATEWAY_JWT_JWKS_FILE": str(idp.jwks),
        "GATEWAY_JWT_ISSUER": ISSUER,
        "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "GATEWAY_JWT_ALGORITHMS": "ES256",
        "GATEWAY_RATE_LIMIT_READ_PER_SECOND": "2",
        "GATEWAY_RATE_LIMIT_BURST_SECONDS": "1",
        "GATEWAY_INGEST_WORKERS": "0",
    }
    replica = stack.start_gateway_replica("auth-replica", env)
    yield replica
    replica.stop()


@pytest.fixture(scope="module")
async def admin(stack: Stack) -> AsyncIterator[RaglineClient]:
    """The stack's admin of tenant default, on the first gateway."""
    async with RaglineClient(stack["gateway"].address, api_key=stack.api_key) as client:
        yield client


@pytest.fixture(scope="module")
async def owls(admin: RaglineClient) -> None:
    """A document in the default collection, for the searches and listings below."""
    await admin.ingest([DocumentToIngest("owls.txt", b"Owls hunt at night.")])


async def new_key(admin: RaglineClient, role: admin_service_pb2.Role, name: str = "") -> str:
    return (await admin.create_api_key(role, display_name=name)).token


async def refused(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return raised.value.details() or ""


def raw_call(channel: grpc.Channel, method: Any, metadata: list[tuple[str, str]]) -> None:
    """Calls `method` with an empty request (empty bytes are a valid message of every type)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        make = channel.stream_stream if method.client_streaming else channel.unary_stream
        request: Any = iter([b""]) if method.client_streaming else b""
        for _ in make(path)(request, timeout=30, metadata=metadata):
            pass
    else:
        make = channel.stream_unary if method.client_streaming else channel.unary_unary
        make(path)(iter([b""]) if method.client_streaming else b"", timeout=30, metadata=metadata)


def test_without_a_credential_every_public_method_is_unauthenticated_while_health_and_reflection_answer(
    stack: Stack,
) -> None:
    methods = [method for service in SERVICES for method in service.methods]
    assert len(methods) == 23
    with grpc.insecure_channel(stack["gateway"].address) as channel:
        for metadata in ([], [("authorization", "Bearer")], [("authorization", f"Basic {stack.api_key}")]):
            for method in methods:
                with pytest.raises(grpc.RpcError) as raised:
                    raw_call(channel, method, metadata)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, method.name  # type: ignore[attr-defined]
                assert "authorization: Bearer <token>" in raised.value.details()  # type: ignore[attr-defined]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([request]), timeout=10
        )
        listed = {s.name for reply in replies for s in reply.list_services_response.service}
        assert {"ragline.v1.GatewayService", "ragline.v1.AdminService"} <= listed


async def test_a_malformed_or_unknown_key_is_unauthenticated(stack: Stack, admin: RaglineClient) -> None:
    real = parse_token(stack.api_key)
    assert real is not None
    for token in (
        "rgl_short",
        str(new_token()),  # well formed, unknown
        str(ApiKeyToken(real.key_id, new_token().secret)),  # a real id with a made-up secret
        "not-a-jwt-either",
    ):
        async with RaglineClient(stack["gateway"].address, api_key=token) as client:
            details = await refused(client.search("anything"), grpc.StatusCode.UNAUTHENTICATED)
            assert token not in details and real.secret not in details


async def test_roles_below_the_method_are_denied_naming_the_role_needed(
    stack: Stack, admin: RaglineClient, owls: None
) -> None:
    reader = await new_key(admin, admin_service_pb2.ROLE_READER, "reader")
    writer = await new_key(admin, admin_service_pb2.ROLE_WRITER, "writer")
    document = DocumentToIngest("roles.txt", b"Owls hunt at night.")
    async with RaglineClient(stack["gateway"].address, api_key=reader) as client:
        details = await refused(client.ingest([document]), grpc.StatusCode.PERMISSION_DENIED)
        assert "needs the writer role" in details and "has the reader role" in details
        await client.search("owls")  # what a reader may do
    async with RaglineClient(stack["gateway"].address, api_key=writer) as client:
        await client.ingest([document])
        details = await refused(
            client.create_api_key(admin_service_pb2.ROLE_ADMIN), grpc.StatusCode.PERMISSION_DENIED
        )
        assert "needs the admin role" in details and "has the writer role" in details


async def test_a_key_revoked_through_one_gateway_is_refused_by_another_within_the_cache_time(
    stack: Stack, admin: RaglineClient, replica: ServiceProcess, owls: None
) -> None:
    token = await new_key(admin, admin_service_pb2.ROLE_READER, "to revoke")
    key_id = token.split("_")[1]
    async with (
        RaglineClient(stack["gateway"].address, api_key=token) as first,
        RaglineClient(replica.address, api_key=token) as second,
    ):
        await first.search("owls")
        await second.search("owls")  # now in the replica's cache
        revoked = await admin.revoke_api_key(key_id)
        assert revoked.HasField("revoke_time")
        started = time.monotonic()
        # The gateway that revoked it forgot it at once.
        assert "was revoked" in await refused(first.search("owls"), grpc.StatusCode.UNAUTHENTICATED)
        while True:
            try:
                await second.search("owls")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "was revoked" in (exc.details() or "")
                break
            assert time.monotonic() - started < CACHE_SECONDS + 1.0, (
                "the replica still accepts the revoked key"
            )
            await asyncio.sleep(0.1)
    listed = await admin.list_api_keys(page_size=1000)
    assert [k.HasField("revoke_time") for k in listed.api_keys if k.key_id == key_id] == [True]


async def test_another_tenants_key_is_not_found_and_its_keys_are_not_listed(
    stack: Stack, admin: RaglineClient
) -> None:
    acme_key, acme_token = store_new_key(
        stack["retriever"].address, "acme", admin_service_pb2.ROLE_ADMIN, "ops"
    )
    default_key = parse_token(stack.api_key)
    assert default_key is not None
    async with RaglineClient(stack["gateway"].address, api_key=acme_token) as acme:
        details = await refused(acme.revoke_api_key(default_key.key_id), grpc.StatusCode.NOT_FOUND)
        assert "default" not in details
        listed = await acme.list_api_keys()
        assert [k.key_id for k in listed.api_keys] == [acme_key.key_id]
        assert {k.tenant for k in listed.api_keys} == {"acme"}
    # The default tenant's admin key still works.
    await admin.list_api_keys()


async def test_a_jwt_with_tenant_and_role_claims_is_accepted(
    replica: ServiceProcess, idp: IdentityProvider, owls: None
) -> None:
    async with RaglineClient(replica.address, api_key=idp.token(tenant="default", role="reader")) as client:
        await client.search("owls")
        details = await refused(
            client.ingest([DocumentToIngest("j.txt", b"x")]), grpc.StatusCode.PERMISSION_DENIED
        )
        assert "needs the writer role" in details
    async with RaglineClient(replica.address, api_key=idp.token(aud="someone-else", role="reader")) as client:
        assert "audience" in await refused(client.search("owls"), grpc.StatusCode.UNAUTHENTICATED)


async def test_the_per_key_rate_limit_answers_with_a_retry_delay_and_recovers(
    admin: RaglineClient, replica: ServiceProcess, owls: None
) -> None:
    token = await new_key(admin, admin_service_pb2.ROLE_READER, "rate limited")
    async with RaglineClient(replica.address, api_key=token) as client:
        # Two reads per second with bursts of one second: the third call at once is refused.
        await client.list_documents()
        await client.list_documents()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.list_documents()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(raised.value)
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(detail.Unpack(retry) for detail in status.details)
        delay = retry.retry_delay.ToTimedelta().total_seconds()
        assert 0 < delay <= 0.5 + 0.05
        await asyncio.sleep(delay)
        await client.list_documents()


def audit_lines(log: Path) -> list[dict[str, Any]]:
    marker = " ragline.audit: "
    return [json.loads(line.split(marker, 1)[1]) for line in log.read_text().splitlines() if marker in line]


async def test_one_audit_line_per_mutating_call_names_tenant_and_key_and_never_a_token(
    stack: Stack, replica: ServiceProcess
) -> None:
    _, token = store_new_key(stack["retriever"].address, "audited", admin_service_pb2.ROLE_ADMIN, "auditor")
    key_id = token.split("_")[1]
    async with RaglineClient(replica.address, api_key=token) as client:
        await client.ingest([DocumentToIngest("a.txt", b"Audited text.")], collection="audited")
        await client.delete_document("a.txt", collection="audited")
        created = await client.create_api_key(admin_service_pb2.ROLE_READER, display_name="made")
        async with RaglineClient(replica.address, api_key=created.token) as reader:
            await refused(
                reader.delete_document("a.txt", collection="audited"), grpc.StatusCode.PERMISSION_DENIED
            )
        await client.revoke_api_key(created.api_key.key_id)
        await client.search("audited", collection="audited")  # a read: not audited
    await asyncio.sleep(0.2)  # the log is written by the replica's process
    lines = [line for line in audit_lines(replica.log_path) if line["credential_id"] == key_id]
    assert [(line["rpc"].rpartition("/")[2], line["outcome"]) for line in lines] == [
        ("IngestDocuments", "OK"),
        ("DeleteDocument", "OK"),
        ("CreateApiKey", "OK"),
        ("RevokeApiKey", "OK"),
    ]
    assert {line["tenant"] for line in lines} == {"audited"}
    assert lines[2]["target"]["key_id"] == lines[3]["target"]["key_id"] == created.api_key.key_id
    # A write refused for its role is logged too, with who tried it.
    (denied,) = [
        line for line in audit_lines(replica.log_path) if line["credential_id"] == created.api_key.key_id
    ]
    assert (denied["tenant"], denied["role"], denied["outcome"]) == ("audited", "reader", "PERMISSION_DENIED")
    log = replica.log_path.read_text()
    secret = parse_token(created.token)
    own = parse_token(token)
    assert secret is not None and own is not None
    assert secret.secret not in log and own.secret not in log


def test_the_keys_commands_create_list_and_revoke_and_the_operator_makes_a_tenants_first_key(
    stack: Stack, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "RAGLINE_GATEWAY_ADDR": stack["gateway"].address,
        "RAGLINE_STATE_DIR": str(stack.state),
    }
    env.pop("RAGLINE_API_KEY", None)

    def ragline(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ragline.cli", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    created = ragline("keys", "create", "--role", "reader", "--name", "cli reader")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    parsed = parse_token(token)
    assert parsed is not None and "shown only this once" in created.stderr
    listed = ragline("keys", "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(parsed.key_id))
    assert "reader" in line and "active" in line and "cli reader" in line
    revoked = ragline("keys", "revoke", parsed.key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in ragline("keys", "list").stdout.split(parsed.key_id, 1)[1].splitlines()[0]
    # The operator's path: a new tenant's first admin key, straight into the key store.
    first = ragline(
        "keys", "create", "--tenant", "newco", "--role", "admin", "--retriever", stack["retriever"].address
    )
    assert first.returncode == 0, first.stderr
    newco = ragline("keys", "list", RAGLINE_API_KEY=first.stdout.strip())
    assert newco.returncode == 0, newco.stderr
    assert len(newco.stdout.splitlines()) == 1 and "admin" in newco.stdout
    # A reader key cannot manage keys; the command says so.
    denied = ragline("keys", "list", RAGLINE_API_KEY=str(new_token()))
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
