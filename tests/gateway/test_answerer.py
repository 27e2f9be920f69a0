"""The gateway's answers without the model: sentence splitting, relevance, mode choice, "not found", extractive."""

from __future__ import annotations

import dataclasses

from ragline.v1 import common_pb2
from ragline_gateway.answers import Answerer, Relevance, Sentence, cosine, sentences
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies

HITS = [
    common_pb2.SearchHit(
        document_id="lune.txt",
        chunk_id="c1",
        text="The ferry stops at 4.2 metres, e.g. in spring. It crosses every 20 minutes!  Fares are £2.",
        score=0.8,
    ),
    common_pb2.SearchHit(document_id="orchard.txt", chunk_id="c2", text="Apples grow here.", score=0.5),
]


def _answerer(**settings: object) -> Answerer:
    config = dataclasses.replace(GatewayConfig(), **settings)  # type: ignore[arg-type]
    return Answerer(config, Dependencies.__new__(Dependencies))


def test_sentences_split_at_sentence_ends_but_not_inside_decimals() -> None:
    assert sentences(HITS) == [
        Sentence("The ferry stops at 4.2 metres, e.g. in spring.", 1),
        Sentence("It crosses every 20 minutes!", 1),
        Sentence("Fares are £2.", 1),
        Sentence("Apples grow here.", 2),
    ]


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == 1.0
    assert cosine([1.0, 0.0], [0.0, 3.0]) == 0.0
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0


def test_auto_is_extractive_only_for_a_close_enough_sentence_and_unspecified_is_the_default() -> None:
    answerer = _answerer(auto_extractive_threshold=0.5, answer_mode="extractive")
    close, far = Relevance(0.6, None), Relevance(0.4, None)
    assert answerer.choose(common_pb2.ANSWER_MODE_AUTO, close) == common_pb2.ANSWER_MODE_EXTRACTIVE
    assert answerer.choose(common_pb2.ANSWER_MODE_AUTO, far) == common_pb2.ANSWER_MODE_GENERATIVE
    assert answerer.choose(common_pb2.ANSWER_MODE_GENERATIVE, close) == common_pb2.ANSWER_MODE_GENERATIVE
    assert answerer.mode(common_pb2.GenerationOptions()) == common_pb2.ANSWER_MODE_EXTRACTIVE
    options = common_pb2.GenerationOptions(answer_mode=common_pb2.ANSWER_MODE_GENERATIVE)
    assert answerer.mode(options) == common_pb2.ANSWER_MODE_GENERATIVE


def test_not_found_below_the_threshold_only_and_never_when_turned_off() -> None:
    answerer = _answerer(not_found_threshold=0.35)
    refusal = answerer.not_found(Relevance(0.2, None))
    assert refusal is not None and refusal.not_found and not refusal.citations
    assert abs(refusal.relevance - 0.2) < 1e-6
    assert answerer.not_found(Relevance(0.35, None)) is None
    assert _answerer(not_found_threshold=-1.0).not_found(Relevance(-1.0, None)) is None


def test_the_extractive_answer_is_the_best_sentence_citing_its_passage() -> None:
    best = Sentence("It crosses every 20 minutes!", 1)
    reply = Answerer.extractive(Relevance(0.7, best), HITS)
    assert reply.answer == "It crosses every 20 minutes! [1]"
    assert [(c.number, c.document_id, c.chunk_id) for c in reply.citations] == [(1, "lune.txt", "c1")]
    assert reply.answer_mode == common_pb2.ANSWER_MODE_EXTRACTIVE
    assert [(s.text, list(s.citations), s.supported) for s in reply.sentences] == [(best.text, [1], True)]
