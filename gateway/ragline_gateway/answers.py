"""Answers written without the language model: the extractive answer and "not found in the documents".

Both rest on one measure, a question's relevance: the best cosine similarity between the
question's embedding (the one the pipeline already has) and the sentences of the passages it
retrieved, which the embedder embeds in one call. Below GATEWAY_NOT_FOUND_THRESHOLD no passage
answers the question, and Ask says so with no citation instead of letting the model guess. The
extractive answer is the best sentence itself, cited: with a 135M model it scores better than the
model's prose on `make eval-answers` (README, Answers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from ragline.channels import downstream_timeout
from ragline.snippets import snippet
from ragline.v1 import common_pb2, embedder_service_pb2, gateway_service_pb2
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.timings import Timings

# A sentence ends at . ! or ? followed by white space and a capital, digit, quote or bracket; "4.2" does not end one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_WORD = re.compile(r"\w")

_MODES = {
    "generative": common_pb2.ANSWER_MODE_GENERATIVE,
    "extractive": common_pb2.ANSWER_MODE_EXTRACTIVE,
    "auto": common_pb2.ANSWER_MODE_AUTO,
}


@dataclass(frozen=True)
class Sentence:
    """One sentence of a retrieved passage, and its passage's number in the answer's [n] markers (from 1)."""

    text: str
    number: int


def sentences(hits: Sequence[common_pb2.SearchHit]) -> list[Sentence]:
    """The sentences of the passages, in passage order, each with its passage's number."""
    found = []
    for number, hit in enumerate(hits, start=1):
        for part in _SENTENCE_END.split(hit.text):
            text = " ".join(part.split())
            if _WORD.search(text):
                found.append(Sentence(text, number))
    return found


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine similarity of two vectors, 0 when either is zero."""
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


@dataclass(frozen=True)
class Relevance:
    """How well the passages answer a question: the best sentence and its cosine with the question."""

    score: float
    """The best cosine, -1 when there is no sentence at all."""
    best: Sentence | None


class Answerer:
    """Measures a question's relevance to its passages and writes the answers that need no model."""

    def __init__(self, config: GatewayConfig, deps: Dependencies) -> None:
        self.config = config
        self.deps = deps

    def mode(self, options: common_pb2.GenerationOptions) -> common_pb2.AnswerMode:
        """The request's answer mode, the configured default when it names none."""
        return options.answer_mode or _MODES[self.config.answer_mode]

    async def relevance(
        self,
        mode: common_pb2.AnswerMode,
        question: Sequence[float],
        model: str,
        hits: Sequence[common_pb2.SearchHit],
        timings: Timings,
        context: grpc.aio.ServicerContext,
    ) -> Relevance:
        """The passages' sentence most similar to the question (one Embed call for all of them, to
        an embedder of `model`, the one that made the question's vector `question`).

        Not measured (-1) when nothing uses it: a generative answer with "not found" turned off.
        """
        found = sentences(hits)
        unused = mode == common_pb2.ANSWER_MODE_GENERATIVE and self.config.not_found_threshold <= -1
        if not found or not question or unused:
            return Relevance(-1.0, None)
        async with timings.stage("relevance"):
            request = embedder_service_pb2.EmbedRequest(
                texts=[s.text for s in found], input_type=embedder_service_pb2.INPUT_TYPE_PASSAGE
            )
            timeout = downstream_timeout(context, self.config.embed_timeout_seconds)
            embedder = await self.deps.embedders.for_model(model)
            reply = await call("embedder", embedder.Embed(request, timeout=timeout))
            self.deps.embedders.check(model, reply)
        scores = [cosine(question, e.values) for e in reply.embeddings]
        best = max(range(len(found)), key=scores.__getitem__)
        return Relevance(scores[best], found[best])

    def choose(self, mode: common_pb2.AnswerMode, relevance: Relevance) -> common_pb2.AnswerMode:
        """The mode that writes this answer: auto becomes extractive when the best sentence is close enough."""
        if mode == common_pb2.ANSWER_MODE_AUTO:
            close = relevance.score >= self.config.auto_extractive_threshold
            return common_pb2.ANSWER_MODE_EXTRACTIVE if close else common_pb2.ANSWER_MODE_GENERATIVE
        return mode

    def not_found(self, relevance: Relevance) -> gateway_service_pb2.AskResponse | None:
        """The "not found in the documents" answer when no sentence is relevant enough, else None."""
        if relevance.score >= self.config.not_found_threshold or self.config.not_found_threshold <= -1:
            return None
        return gateway_service_pb2.AskResponse(
            answer=self.config.not_found_answer,
            finish_reason=common_pb2.FINISH_REASON_NO_CONTEXT,
            usage=common_pb2.TokenUsage(),
            not_found=True,
            relevance=relevance.score,
        )

    @staticmethod
    def extractive(
        relevance: Relevance, hits: Sequence[common_pb2.SearchHit]
    ) -> gateway_service_pb2.AskResponse:
        """The best sentence as the answer, citing its passage."""
        best = relevance.best
        if best is None:
            raise ValueError("an extractive answer needs a sentence")
        hit = hits[best.number - 1]
        return gateway_service_pb2.AskResponse(
            answer=f"{best.text} [{best.number}]",
            citations=[
                common_pb2.Citation(
                    number=best.number,
                    document_id=hit.document_id,
                    chunk_id=hit.chunk_id,
                    snippet=snippet(hit.text),
                    score=hit.score,
                )
            ],
            usage=common_pb2.TokenUsage(),
            finish_reason=common_pb2.FINISH_REASON_STOP,
            answer_mode=common_pb2.ANSWER_MODE_EXTRACTIVE,
            sentences=[
                common_pb2.SentenceSupport(
                    text=best.text, citations=[best.number], supported=True, support=1.0
                )
            ],
            relevance=relevance.score,
        )
