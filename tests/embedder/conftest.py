"""Fixtures for the embedder tests: one real embedder process shared by the whole session, and
a real HTTP server on loopback that speaks the OpenAI embeddings and `/rerank` protocols."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from embedder_loopback import HttpModelServer

from ragline.config import load_config
from ragline.devstack import ServiceProcess, Stack
from ragline.v1 import embedder_service_pb2_grpc
from ragline_embedder.backends import LocalBackend, backend_loader
from ragline_embedder.config import EmbedderConfig


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The embedder running as its own process, as in production, once it reports SERVING."""
    state: Path = tmp_path_factory.mktemp("embedder-state")
    stack = Stack(state=state, services=("embedder",), free_ports=True)
    stack.start()
    try:
        yield stack["embedder"]
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stub(embedder: ServiceProcess) -> Iterator[embedder_service_pb2_grpc.EmbedderServiceStub]:
    """A client of the running embedder."""
    with grpc.insecure_channel(embedder.address) as channel:
        yield embedder_service_pb2_grpc.EmbedderServiceStub(channel)


@pytest.fixture(scope="session")
def backend() -> LocalBackend:
    """The local backend in-process, with a query prefix and no passage prefix (as E5-style models use)."""
    config = load_config(
        EmbedderConfig, environ={"EMBEDDER_QUERY_PREFIX": "query: ", "EMBEDDER_THREADS": "1"}
    )
    loaded = backend_loader(config)()
    assert isinstance(loaded, LocalBackend)
    return loaded


@pytest.fixture(scope="session")
def model_server(backend: LocalBackend) -> Iterator[HttpModelServer]:
    """The OpenAI-compatible and rerank server, shared by the session; each test resets what it changes."""
    server = HttpModelServer(backend)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def http_server(model_server: HttpModelServer) -> HttpModelServer:
    """The shared server with no failure injected, its request logs empty and the default batch limit."""
    model_server.failure = None
    model_server.max_inputs = 8
    model_server.embedding_requests.clear()
    model_server.rerank_requests.clear()
    return model_server
