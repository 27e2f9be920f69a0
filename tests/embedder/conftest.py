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
from ragline_embedder.backends import EmbeddingBackend
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.onnx_backend import OnnxBackend
from ragline_embedder.torch_backend import TorchBackend


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the session: the in-process backend and the process share its graph."""
    return tmp_path_factory.mktemp("embedder-onnx")


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Iterator[ServiceProcess]:
    """The embedder running as its own process, as in production, once it reports SERVING."""
    state: Path = tmp_path_factory.mktemp("embedder-state")
    env = {"EMBEDDER_ONNX_CACHE_DIR": str(onnx_cache)}
    stack = Stack(state=state, services=("embedder",), free_ports=True, env=env)
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


def local_config(onnx_cache: Path, **environ: str) -> EmbedderConfig:
    """The local backend's settings: a query prefix and no passage prefix (as E5-style models use), one thread."""
    base = {
        "EMBEDDER_QUERY_PREFIX": "query: ",
        "EMBEDDER_THREADS": "1",
        "EMBEDDER_ONNX_CACHE_DIR": str(onnx_cache),
    }
    return load_config(EmbedderConfig, environ={**base, **environ})


@pytest.fixture(scope="session")
def backend(onnx_cache: Path) -> EmbeddingBackend:
    """The default local backend in-process: all-MiniLM-L6-v2 on onnxruntime."""
    loaded = backend_loader(local_config(onnx_cache))()
    assert isinstance(loaded, OnnxBackend)
    return loaded


@pytest.fixture(scope="session")
def torch_backend(onnx_cache: Path) -> TorchBackend:
    """The same model on torch (`EMBEDDER_LOCAL_RUNTIME=torch`), the reference the ONNX graph must match."""
    loaded = backend_loader(local_config(onnx_cache, EMBEDDER_LOCAL_RUNTIME="torch"))()
    assert isinstance(loaded, TorchBackend)
    return loaded


@pytest.fixture(params=["onnxruntime", "torch"])
def any_backend(
    request: pytest.FixtureRequest, backend: EmbeddingBackend, torch_backend: TorchBackend
) -> EmbeddingBackend:
    """Each local runtime in turn, for what both must do alike."""
    return backend if request.param == "onnxruntime" else torch_backend


@pytest.fixture(scope="session")
def model_server(backend: EmbeddingBackend) -> Iterator[HttpModelServer]:
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
