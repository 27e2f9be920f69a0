"""Answers users can trust, through the real stack: "not found", extractive answers and sentence support.

The session's stack answers generatively by default (tests/e2e/conftest.py), so each test here
names the mode it means; the "not found" threshold is the shipped default.
"""

from __future__ import annotations

import re
from typing import cast

import grpc
import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration
COLLECTION = "answers-test"
NOT_FOUND = "Not found in the documents."
DOCUMENTS = {
    "lune.txt": (
        "The Lune Crossing ferry carries foot passengers across the river Lune near Halton. "
        "The ferry stops running when the river gauge at Halton reads 4.2 metres or more. "
        "In winter it crosses every twenty minutes."
    ),
    "orchard.txt": (
        "The Brackenfield orchard grows twelve varieties of cider apple. "
        "Its oldest tree was planted in 1911 and still fruits every autumn."
    ),
}


@pytest.fixture(scope="module")
async def documents(client: RaglineClient) -> None:
    await client.ingest(
        [DocumentToIngest(name, text.encode()) for name, text in DOCUMENTS.items()], collection=COLLECTION
    )


async def test_an_unanswerable_question_is_not_found_with_no_citation_and_no_model(
    client: RaglineClient, documents: None
) -> None:
    question = "Which team won the 1998 football World Cup final?"
    reply = await client.ask(question, collection=COLLECTION, max_tokens=32)
    assert reply.not_found
    assert reply.answer == NOT_FOUND
    assert not reply.citations and not reply.sentences
    assert "generate" not in [t.stage for t in reply.stage_timings]
    assert reply.relevance < 0.35
    events = [
        e
        async for e in client.ask_stream(
            question,
            collection=COLLECTION,
            answer_mode=common_pb2.ANSWER_MODE_EXTRACTIVE,
            cache_policy=gw.CACHE_POLICY_BYPASS,
        )
    ]
    final = events[-1].final
    assert final.not_found and not final.citations
    assert "".join(e.delta for e in events if e.HasField("delta")) == NOT_FOUND


async def test_extractive_mode_answers_with_the_passages_sentence_and_cites_it(
    client: RaglineClient, documents: None
) -> None:
    reply = await client.ask(
        "At what river gauge level does the Lune Crossing ferry stop running?",
        collection=COLLECTION,
        answer_mode=common_pb2.ANSWER_MODE_EXTRACTIVE,
    )
    assert not reply.not_found
    assert reply.answer_mode == common_pb2.ANSWER_MODE_EXTRACTIVE
    assert reply.answer.startswith("The ferry stops running when the river gauge at Halton reads 4.2 metres")
    (citation,) = reply.citations
    assert citation.document_id == "lune.txt"
    assert reply.answer.endswith(f"[{citation.number}]")
    (sentence,) = reply.sentences
    assert sentence.supported and list(sentence.citations) == [citation.number]
    assert "generate" not in [t.stage for t in reply.stage_timings]
    assert not reply.usage.completion_tokens


async def test_the_answer_mode_is_part_of_the_answer_cache_key(
    client: RaglineClient, documents: None
) -> None:
    question = "How often does the Lune ferry cross in winter?"
    extractive = await client.ask(
        question, collection=COLLECTION, answer_mode=common_pb2.ANSWER_MODE_EXTRACTIVE
    )
    generative = await client.ask(
        question, collection=COLLECTION, answer_mode=common_pb2.ANSWER_MODE_GENERATIVE, max_tokens=48
    )
    assert extractive.answer_mode == common_pb2.ANSWER_MODE_EXTRACTIVE
    assert generative.answer_mode == common_pb2.ANSWER_MODE_GENERATIVE
    assert generative.cache_layer not in (gw.CACHE_LAYER_ANSWER, gw.CACHE_LAYER_SEMANTIC)


async def test_a_number_in_no_cited_passage_is_never_presented_as_supported(
    client: RaglineClient, documents: None
) -> None:
    for question in (
        "At what river gauge level does the Lune Crossing ferry stop running?",
        "When was the oldest tree of the Brackenfield orchard planted?",
        "How many varieties of apple does the Brackenfield orchard grow?",
    ):
        events = [
            e
            async for e in client.ask_stream(
                question,
                collection=COLLECTION,
                answer_mode=common_pb2.ANSWER_MODE_GENERATIVE,
                max_tokens=64,
                cache_policy=gw.CACHE_POLICY_BYPASS,
            )
        ]
        hits, reply = events[0].passages.hits, events[-1].final
        assert reply.answer_mode == common_pb2.ANSWER_MODE_GENERATIVE
        assert reply.sentences, reply.answer
        # Generated markers number the passages as the prompt listed them; the citations resolve them.
        texts = {(h.document_id, h.chunk_id): h.text for h in hits}
        passage = {c.number: texts[c.document_id, c.chunk_id] for c in reply.citations}
        for sentence in reply.sentences:
            cited = " ".join(passage[n] for n in sentence.citations)
            numbers = {n.replace(",", "") for n in re.findall(r"\d+(?:[.,]\d+)*", sentence.text)}
            missing = {n for n in numbers if n not in cited.replace(",", "")}
            assert set(sentence.unsupported_numbers) == missing, sentence
            if missing or not sentence.citations:
                assert not sentence.supported, sentence


async def test_an_unknown_answer_mode_is_invalid_argument(client: RaglineClient, documents: None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.ask("Anything?", collection=COLLECTION, answer_mode=cast("common_pb2.AnswerMode", 7))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "answer_mode" in (raised.value.details() or "")
