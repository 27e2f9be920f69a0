"""Fixtures for the embedder tests: one real embedder process shared by the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

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
