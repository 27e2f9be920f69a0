"""The openai backend against a real OpenAI-compatible HTTP server on loopback serving MiniLM vectors.

The SDK talks real HTTP to the server in conftest.py; nothing of the SDK is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from embedder_loopback import Failure, HttpModelServer
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ragline.config import load_config
from ragline.devstack import Stack
from ragline.errors import FailedPrecondition, ResourceExhausted, Unavailable
from ragline.retry import retry_after_seconds
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline_embedder.backends import EmbeddingBackend
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.openai_backend import OpenAIBackend

TEXTS = [f"measurements of the boundary layer at station {i}" + " downstream" * (i % 4) for i in range(10)]


def connect(server: HttpModelServer, **settings: str) -> OpenAIBackend:
    environ = {
        "EMBEDDER_BACKEND": "openai",
        "EMBEDDER_OPENAI_BASE_URL": f"{server.url}/v1",
        "EMBEDDER_OPENAI_MODEL": "all-MiniLM-L6-v2",
        "EMBEDDER_OPENAI_MAX_INPUTS": "8",
        **settings,
    }
    backend = backend_loader(load_config(EmbedderConfig, environ=environ))()
    assert isinstance(backend, OpenAIBackend)
    return backend


def test_vectors_are_the_servers_in_order(http_server: HttpModelServer, backend: EmbeddingBackend) -> None:
    remote = connect(http_server)
    assert (remote.model_name, remote.dimension, remote.max_input_tokens, remote.backend, remote.runtime) == (
        "all-MiniLM-L6-v2",
        384,
        8191,
        "openai",
        "remote",
    )
    np.testing.assert_allclose(remote.encode(TEXTS), backend.encode(TEXTS), atol=1e-5)


def test_dimensions_shorten_vectors_to_unit_length(
    http_server: HttpModelServer, backend: EmbeddingBackend
) -> None:
    remote = connect(http_server, EMBEDDER_OPENAI_DIMENSIONS="128")
    assert remote.dimension == 128
    vectors = remote.encode(TEXTS[:3])
    expected = backend.encode(TEXTS[:3])[:, :128]
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


def test_batches_are_split_by_inputs_and_tokens_per_request(http_server: HttpModelServer) -> None:
    http_server.max_inputs = 4
    remote = connect(http_server, EMBEDDER_OPENAI_MAX_INPUTS="4")
    http_server.embedding_requests.clear()
    remote.encode(TEXTS)
    assert [len(r) for r in http_server.embedding_requests] == [4, 4, 2]

    remote = connect(http_server, EMBEDDER_OPENAI_MAX_REQUEST_TOKENS="33")
    http_server.embedding_requests.clear()
    remote.encode(TEXTS[:4])  # 10, 11, 12 and 13 tokens
    assert [len(r) for r in http_server.embedding_requests] == [3, 1]


def test_overlong_inputs_are_truncated_to_the_token_limit(http_server: HttpModelServer) -> None:
    remote = connect(http_server, EMBEDDER_OPENAI_MAX_INPUT_TOKENS="5")
    assert remote.count_tokens(["one two three four five six seven"]) == [7]
    http_server.embedding_requests.clear()
    remote.encode(["one two three four five six seven"])
    assert http_server.embedding_requests == [["one two three four five"]]


def test_a_batch_over_the_servers_limit_is_refused_not_retried(http_server: HttpModelServer) -> None:
    remote = connect(http_server)
    http_server.max_inputs = 2
    with pytest.raises(FailedPrecondition, match="HTTP 400"):
        remote.encode(TEXTS[:3])


def test_429_is_retried_after_the_delay_the_server_asks_for(http_server: HttpModelServer) -> None:
    remote = connect(http_server)
    http_server.failure = Failure(429, {"Retry-After": "1"}, times=2)
    started = time.monotonic()
    assert remote.encode(TEXTS[:2]).shape == (2, 384)
    assert time.monotonic() - started >= 2.0


def test_spent_retries_answer_resource_exhausted_with_the_delay(http_server: HttpModelServer) -> None:
    remote = connect(http_server, EMBEDDER_OPENAI_MAX_RETRIES="1")
    http_server.failure = Failure(429, {"retry-after-ms": "100"})
    with pytest.raises(ResourceExhausted) as raised:
        remote.encode(TEXTS[:1])
    assert raised.value.retry_after == pytest.approx(0.1)
    # A delay longer than the retry cap is passed on at once rather than waited for here.
    http_server.failure = Failure(429, {"Retry-After": "120"})
    started = time.monotonic()
    with pytest.raises(ResourceExhausted) as raised:
        remote.encode(TEXTS[:1])
    assert time.monotonic() - started < 1
    assert raised.value.retry_after == pytest.approx(120)


def test_server_errors_back_off_then_answer_unavailable(http_server: HttpModelServer) -> None:
    remote = connect(http_server, EMBEDDER_OPENAI_MAX_RETRIES="2")
    http_server.failure = Failure(503)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"HTTP 503.*3 attempt") as raised:
        remote.encode(TEXTS[:1])
    # Backoffs of 0.5 s and 1 s, each jittered down to no less than half.
    assert 0.75 <= time.monotonic() - started < 3
    assert raised.value.retry_after is not None


def test_a_server_that_is_not_there_is_unavailable(http_server: HttpModelServer) -> None:
    environ = {
        "EMBEDDER_BACKEND": "openai",
        "EMBEDDER_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "EMBEDDER_OPENAI_MAX_RETRIES": "0",
    }
    with pytest.raises(Unavailable, match="connection failed"):
        backend_loader(load_config(EmbedderConfig, environ=environ))()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


@pytest.fixture(scope="module")
def openai_embedder(
    model_server: HttpModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbedderServiceStub]:
    """The embedder process with EMBEDDER_BACKEND=openai, pointed at the loopback server, without a cache."""
    env = {
        "EMBEDDER_BACKEND": "openai",
        "EMBEDDER_OPENAI_BASE_URL": f"{model_server.url}/v1",
        "EMBEDDER_OPENAI_MODEL": "all-MiniLM-L6-v2",
        "EMBEDDER_OPENAI_MAX_INPUTS": "8",
        "EMBEDDER_OPENAI_MAX_RETRIES": "1",
        "EMBEDDER_CACHE_TTL_SECONDS": "0",
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    model_server.failure = None
    stack = Stack(
        state=tmp_path_factory.mktemp("openai-embedder"), services=("embedder",), free_ports=True, env=env
    )
    stack.start()
    try:
        with grpc.insecure_channel(stack["embedder"].address) as channel:
            yield EmbedderServiceStub(channel)
    finally:
        stack.stop()


@pytest.mark.integration
def test_service_embeds_through_the_api(
    openai_embedder: EmbedderServiceStub, http_server: HttpModelServer, backend: EmbeddingBackend
) -> None:
    info = openai_embedder.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert (info.backend, info.model, info.dimension, info.max_input_tokens) == (
        "openai",
        "all-MiniLM-L6-v2",
        384,
        8191,
    )
    reply = openai_embedder.Embed(pb.EmbedRequest(texts=TEXTS), timeout=30)
    vectors = np.array([e.values for e in reply.embeddings], dtype=np.float32)
    np.testing.assert_allclose(vectors, backend.encode(TEXTS), atol=1e-5)
    assert [len(r) for r in http_server.embedding_requests] == [8, 2]


@pytest.mark.integration
def test_service_passes_rate_limits_on_with_retry_info(
    openai_embedder: EmbedderServiceStub, http_server: HttpModelServer
) -> None:
    http_server.failure = Failure(429, {"Retry-After": "90"})
    with pytest.raises(grpc.RpcError) as raised:
        openai_embedder.Embed(pb.EmbedRequest(texts=["a query"]), timeout=30)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error)
    assert status is not None
    retry_info = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry_info) for detail in status.details)
    assert retry_info.retry_delay.seconds == 90
