"""PostgreSQL and Redis URLs with passwords and TLS (#15), for real: a retriever reaches its database with
`sslmode=verify-full` and `sslrootcert`, and Redis with `rediss://` and a password, through a
TLS-terminating proxy (tests/tls_proxy.py) with a trustme certificate in front of the embedded servers;
a certificate of another CA is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import grpc
import pytest
import redis
import redis.asyncio as aioredis
import trustme
from test_retriever_service import TENANT
from tls_proxy import TlsProxy

from ragline.collection_state import state_key
from ragline.devstack import ServiceProcess, Stack
from ragline.embedded_redis import EmbeddedRedis
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path, Path]:
    folder = tmp_path_factory.mktemp("tls-urls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(folder / "other-ca.pem"))
    return ca, folder / "ca.pem", folder / "other-ca.pem"


@pytest.fixture(scope="module")
def postgres_proxy(database_url: str, ca_files: tuple[trustme.CA, Path, Path]) -> Iterator[TlsProxy]:
    """TLS in front of the session retriever's embedded PostgreSQL (which listens on a Unix socket)."""
    query = parse_qs(urlsplit(database_url).query)
    socket_path = f"{query['host'][0]}/.s.PGSQL.{query['port'][0]}"
    proxy = TlsProxy(
        lambda: asyncio.open_unix_connection(socket_path), ca_files[0].issue_cert("127.0.0.1"), postgres=True
    )
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """An embedded Valkey that requires a password."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey-tls"))
    server.start()
    with redis.Redis.from_url(server.url) as client:
        client.config_set("requirepass", REDIS_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_proxy(valkey: EmbeddedRedis, ca_files: tuple[trustme.CA, Path, Path]) -> Iterator[TlsProxy]:
    proxy = TlsProxy(
        lambda: asyncio.open_connection("127.0.0.1", valkey.port), ca_files[0].issue_cert("127.0.0.1")
    )
    proxy.start()
    yield proxy
    proxy.stop()


def postgres_url(proxy: TlsProxy, ca: Path) -> str:
    # The password travels in the URL as with a managed server (the embedded one trusts local connections).
    return f"postgresql://postgres:pg%40pass@127.0.0.1:{proxy.port}/postgres?sslmode=verify-full&sslrootcert={ca}"


def redis_url(proxy: TlsProxy, ca: Path, password: str = REDIS_PASSWORD) -> str:
    return f"rediss://:{quote(password, safe='')}@127.0.0.1:{proxy.port}/0?ssl_ca_certs={ca}"


def test_a_retriever_uses_postgresql_and_redis_over_verified_tls_with_passwords(
    tmp_path: Path,
    postgres_proxy: TlsProxy,
    redis_proxy: TlsProxy,
    valkey: EmbeddedRedis,
    ca_files: tuple[trustme.CA, Path, Path],
) -> None:
    _, ca, _ = ca_files
    env = {
        "DATABASE_URL": postgres_url(postgres_proxy, ca),
        "REDIS_URL": redis_url(redis_proxy, ca),
        # A TLS handshake through the proxy takes longer than the local default allows.
        "RETRIEVER_REDIS_TIMEOUT_SECONDS": "2",
        "RETRIEVER_STATE_LEASE_SECONDS": "5",
    }
    stack = Stack(state=tmp_path, services=("retriever",), free_ports=True, env=env)
    stack.start()
    try:
        retriever: ServiceProcess = stack["retriever"]
        with grpc.insecure_channel(retriever.address) as channel:
            stub = pb_grpc.RetrieverServiceStub(channel)
            stub.CreateStoredCollection(
                pb.CreateStoredCollectionRequest(tenant=TENANT, name="over-tls", dimension=4), timeout=10
            )
            # The basic view, what a gateway asks on a query, is published in Redis for the next ones.
            request = pb.GetStoredCollectionRequest(
                tenant=TENANT, name="over-tls", view=pb.COLLECTION_VIEW_BASIC
            )
            stub.GetStoredCollection(request, timeout=10)
        # The lookup published the collection's state in Valkey, through TLS, with the password.
        deadline = time.monotonic() + 10
        published = "ragline_retriever_state_publications_total"
        while retriever.metric(published, {"outcome": "published"}) < 1:
            assert retriever.metric(published, {"outcome": "error"}) == 0, retriever.log_tail()
            assert time.monotonic() < deadline, retriever.log_tail()
            time.sleep(0.1)
        with redis.Redis.from_url(valkey.url, password=REDIS_PASSWORD) as direct:
            assert direct.keys(state_key(TENANT, "over-tls").replace(":state", ":*"))
        assert postgres_proxy.handshakes > 0 and redis_proxy.handshakes > 0
    finally:
        stack.stop()


def test_a_database_certificate_of_another_ca_is_refused(
    tmp_path: Path, postgres_proxy: TlsProxy, ca_files: tuple[trustme.CA, Path, Path]
) -> None:
    _, _, other_ca = ca_files
    stack = Stack(
        state=tmp_path,
        services=("retriever",),
        free_ports=True,
        env={"DATABASE_URL": postgres_url(postgres_proxy, other_ca), "REDIS_URL": ""},
    )
    with pytest.raises(RuntimeError) as failed:
        stack.start(timeout=60)
    assert "certificate verify failed" in str(failed.value)
    # Plaintext to the TLS port is refused too.
    stack = Stack(
        state=tmp_path / "plain",
        services=("retriever",),
        free_ports=True,
        env={
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{postgres_proxy.port}/postgres?sslmode=disable"
        },
    )
    refused_before = postgres_proxy.refused
    with pytest.raises(RuntimeError):
        stack.start(timeout=60)
    assert postgres_proxy.refused > refused_before


async def test_redis_refuses_another_ca_and_a_wrong_password(
    redis_proxy: TlsProxy, ca_files: tuple[trustme.CA, Path, Path]
) -> None:
    _, ca, other_ca = ca_files
    good = aioredis.from_url(redis_url(redis_proxy, ca))
    assert await good.ping()
    await good.aclose()
    foreign = aioredis.from_url(redis_url(redis_proxy, other_ca))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        await foreign.ping()
    await foreign.aclose()
    wrong = aioredis.from_url(redis_url(redis_proxy, ca, password="not-the-password"))
    with pytest.raises(redis.AuthenticationError):
        await wrong.ping()
    await wrong.aclose()
