"""Fixtures for the retriever tests: one real retriever process, on its own embedded PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from test_retriever_service import TENANT

from ragline.devstack import ServiceProcess, Stack
from ragline.v1 import ingest_queue_service_pb2_grpc as queue_grpc
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc


def embedded_database_url(state: Path) -> str:
    """The URL of the embedded PostgreSQL a retriever started under `state`, from its postmaster.pid."""
    lines = (state / "postgres" / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


@pytest.fixture(scope="session")
def retriever_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state directory of the session's retriever (its PostgreSQL data lives in `postgres/`)."""
    return tmp_path_factory.mktemp("retriever-state")


@pytest.fixture(scope="session")
def retriever(retriever_state: Path) -> Iterator[ServiceProcess]:
    """The retriever running as its own process, as in production, once it reports SERVING."""
    # An empty DATABASE_URL selects the embedded server whatever the machine's environment says.
    stack = Stack(state=retriever_state, services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
    stack.start()
    try:
        yield stack["retriever"]
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def database_url(retriever: ServiceProcess, retriever_state: Path) -> str:
    """A URL to connect to the session retriever's database directly."""
    return embedded_database_url(retriever_state)


@pytest.fixture(scope="session")
async def channel(retriever: ServiceProcess) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the running retriever, which serves RetrieverService and IngestQueueService."""
    async with grpc.aio.insecure_channel(retriever.address) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> pb_grpc.RetrieverServiceStub:
    """An asynchronous client of the running retriever's RetrieverService."""
    return pb_grpc.RetrieverServiceStub(channel)


@pytest.fixture(scope="session")
def queue(channel: grpc.aio.Channel) -> queue_grpc.IngestQueueServiceStub:
    """An asynchronous client of the running retriever's IngestQueueService."""
    return queue_grpc.IngestQueueServiceStub(channel)


@pytest.fixture(scope="module")
def quota_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state directory of the quota retriever (its PostgreSQL data lives in `postgres/`)."""
    return tmp_path_factory.mktemp("quota-retriever")


@pytest.fixture(scope="module")
def quota_retriever(quota_state: Path) -> Iterator[str]:
    """The address of a retriever whose tenants may each store 4 documents and 10 chunks."""
    stack = Stack(
        state=quota_state,
        services=("retriever",),
        free_ports=True,
        env={
            "DATABASE_URL": "",
            "RETRIEVER_TENANT_MAX_DOCUMENTS": "4",
            "RETRIEVER_TENANT_MAX_CHUNKS": "10",
        },
    )
    stack.start()
    try:
        yield stack["retriever"].address
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def quota_database_url(quota_retriever: str, quota_state: Path) -> str:
    """A URL to connect to the quota retriever's database directly."""
    return embedded_database_url(quota_state)


@pytest.fixture(scope="module")
def short_ttl_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conversation-ttl-retriever")


@pytest.fixture(scope="module")
def short_ttl_retriever(short_ttl_state: Path) -> Iterator[str]:
    """A retriever that keeps conversations 2 s after their last turn and purges every second."""
    stack = Stack(
        state=short_ttl_state,
        services=("retriever",),
        free_ports=True,
        env={
            "DATABASE_URL": "",
            "RETRIEVER_CONVERSATION_TTL_SECONDS": "2",
            "RETRIEVER_CONVERSATION_PURGE_INTERVAL_SECONDS": "1",
        },
    )
    stack.start()
    try:
        yield stack["retriever"].address
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def short_ttl_database_url(short_ttl_retriever: str, short_ttl_state: Path) -> str:
    """A URL to connect to the short-TTL retriever's database directly."""
    return embedded_database_url(short_ttl_state)


_names = itertools.count()


@pytest.fixture
def new_collection(
    stub: pb_grpc.RetrieverServiceStub,
) -> Callable[..., Awaitable[str]]:
    """Creates a collection with a name no other test uses; returns the name."""

    async def create(dimension: int = 8, prefix: str = "test") -> str:
        name = f"{prefix}-{next(_names)}"
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(
                tenant=TENANT, name=name, embedding_model="handmade", dimension=dimension
            )
        )
        return name

    return create
