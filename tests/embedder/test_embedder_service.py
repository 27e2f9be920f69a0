"""Integration tests: the real embedder process, called over gRPC through the generated stub."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from numpy.typing import NDArray

from ragline.devstack import ServiceProcess
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub

pytestmark = pytest.mark.integration


def embed(
    stub: EmbedderServiceStub, texts: list[str], input_type: pb.InputType = pb.INPUT_TYPE_PASSAGE
) -> NDArray[np.float32]:
    reply = stub.Embed(pb.EmbedRequest(texts=texts, input_type=input_type), timeout=60)
    assert reply.model == "all-MiniLM-L6-v2"
    assert reply.dimension == 384
    return np.array([e.values for e in reply.embeddings], dtype=np.float32)


def test_model_info(stub: EmbedderServiceStub) -> None:
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert (info.model, info.dimension, info.backend, info.max_input_tokens) == (
        "all-MiniLM-L6-v2",
        384,
        "local",
        256,
    )


def test_embed_returns_unit_vectors_in_request_order(stub: EmbedderServiceStub) -> None:
    texts = ["the lift of a wing", "heat transfer in hypersonic flow", "buckling of thin cylinders"]
    batch = embed(stub, texts)
    assert batch.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(batch[i], embed(stub, [text])[0], atol=1e-5)


def test_requests_larger_than_a_model_batch_keep_their_order(stub: EmbedderServiceStub) -> None:
    # 40 texts are two model batches (32 + 8); texts differ in length so padding differs too.
    texts = [f"pressure distribution measured at station {i}" + " downstream" * (i % 5) for i in range(40)]
    batch = embed(stub, texts, pb.INPUT_TYPE_QUERY)
    assert batch.shape == (40, 384)
    for i in (0, 31, 32, 39):
        np.testing.assert_allclose(batch[i], embed(stub, [texts[i]], pb.INPUT_TYPE_QUERY)[0], atol=1e-5)


def test_paraphrase_is_closer_than_an_unrelated_sentence(stub: EmbedderServiceStub) -> None:
    anchor, paraphrase, unrelated = embed(
        stub,
        [
            "How does a propeller slipstream change the lift of a wing?",
            "The effect of propeller wash on wing lift.",
            "My grandmother bakes bread every Sunday morning.",
        ],
    )
    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.3


@pytest.mark.parametrize(
    ("texts", "field"),
    [
        ([], "texts"),
        (["fine", ""], "texts[1]"),
        (["fine", "also fine", " \n\t "], "texts[2]"),
        (["text"] * 257, "texts[256]"),
    ],
    ids=["empty-batch", "empty-string", "whitespace-only", "too-many"],
)
def test_bad_requests_are_invalid_argument_naming_the_text(
    stub: EmbedderServiceStub, texts: list[str], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Embed(pb.EmbedRequest(texts=texts), timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == field


def test_invalid_utf8_is_invalid_argument_naming_the_text(embedder: ServiceProcess) -> None:
    request = pb.EmbedRequest(texts=["fine", "also fine"]).SerializeToString() + b"\x0a\x03ab\xff"
    with grpc.insecure_channel(embedder.address) as channel:
        call = channel.unary_unary("/ragline.v1.EmbedderService/Embed")
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "texts[2] is not valid UTF-8; send text as UTF-8"


def metrics(embedder: ServiceProcess) -> dict[str, float]:
    """The service's metric samples without labels, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{embedder.metrics_port}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {
        name: float(value) for name, _, value in (line.partition(" ") for line in lines if line[:1] != "#")
    }


def test_concurrent_calls_are_merged_and_repeats_come_from_the_cache(
    stub: EmbedderServiceStub, embedder: ServiceProcess
) -> None:
    before = metrics(embedder)
    texts = [f"wind tunnel run number {i} of the series" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        first = list(pool.map(lambda text: embed(stub, [text], pb.INPUT_TYPE_QUERY), texts))
    middle = metrics(embedder)
    # 24 single-text calls from 8 threads took fewer model batches than calls.
    batches = middle["ragline_embedder_batch_size_count"] - before["ragline_embedder_batch_size_count"]
    assert batches < 24
    assert middle["ragline_embedder_cache_misses_total"] - before["ragline_embedder_cache_misses_total"] == 24
    again = embed(stub, texts, pb.INPUT_TYPE_QUERY)
    after = metrics(embedder)
    assert after["ragline_embedder_cache_hits_total"] - middle["ragline_embedder_cache_hits_total"] == 24
    assert after["ragline_embedder_batch_size_count"] == middle["ragline_embedder_batch_size_count"]
    np.testing.assert_allclose(again, np.vstack(first), atol=1e-6)
    assert after['ragline_embedder_tokens_total{input_type="query"}'] > 0
    assert "ragline_embedder_queue_wait_seconds_count" in after
    assert "ragline_embedder_queue_depth" in after


def test_bypass_cache_neither_reads_nor_writes_the_cache(
    stub: EmbedderServiceStub, embedder: ServiceProcess
) -> None:
    texts = ["a query the gateway caches itself", "and another one"]
    request = pb.EmbedRequest(texts=texts, input_type=pb.INPUT_TYPE_QUERY, bypass_cache=True)
    before = metrics(embedder)
    first = stub.Embed(request, timeout=60)
    middle = metrics(embedder)
    # Not read: no lookup counted; not written: the same texts through the cache miss.
    assert middle["ragline_embedder_cache_misses_total"] == before["ragline_embedder_cache_misses_total"]
    again = embed(stub, texts, pb.INPUT_TYPE_QUERY)
    after = metrics(embedder)
    assert after["ragline_embedder_cache_misses_total"] - middle["ragline_embedder_cache_misses_total"] == 2
    assert after["ragline_embedder_cache_hits_total"] == middle["ragline_embedder_cache_hits_total"]
    np.testing.assert_allclose(again, np.array([e.values for e in first.embeddings]), atol=1e-6)
