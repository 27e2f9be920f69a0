"""The generator's per-sentence support: what a model writes is checked against the passages it cites.

The servicer runs in process with a scripted backend in place of the model, so each test decides
exactly what the "model" writes; the prompt, the citation repair and the response are the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import grpc

from ragline.v1 import common_pb2, generator_service_pb2
from ragline_generator.backends import Finish, Generation
from ragline_generator.config import GeneratorConfig
from ragline_generator.prompt import load_template
from ragline_generator.service import GeneratorServicer

FERRY = common_pb2.Passage(
    document_id="lune.txt",
    chunk_id="lune-1",
    text="The Lune Crossing ferry stops running when the river gauge reads 4.2 metres or more.",
    score=0.9,
)


class ScriptedBackend:
    """A chat backend that writes the given answer, a few characters at a time."""

    model_name = "scripted"
    context_window = 2048

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def stream(self, generation: Generation, *, timeout: float) -> AsyncGenerator[str | Finish, None]:
        for start in range(0, len(self.answer), 5):
            yield self.answer[start : start + 5]
        yield Finish(prompt_tokens=None, completion_tokens=len(self.answer) // 5, reason="stop")


class NoDeadline:
    """The part of a servicer context the generator reads: no caller deadline."""

    def time_remaining(self) -> float | None:
        return None


async def _generate(answer: str) -> generator_service_pb2.GenerateResponse:
    servicer = GeneratorServicer(GeneratorConfig(), ScriptedBackend(answer), load_template())
    await servicer.start()
    request = generator_service_pb2.GenerateRequest(
        question="At what gauge level does the ferry stop?", passages=[FERRY]
    )
    return await servicer.Generate(request, cast("grpc.aio.ServicerContext", NoDeadline()))


async def test_a_number_no_cited_passage_holds_is_flagged_and_not_supported() -> None:
    response = await _generate("The ferry stops running at 5.5 metres [1].")
    (sentence,) = response.sentences
    assert list(sentence.citations) == [1]
    assert list(sentence.unsupported_numbers) == ["5.5"]
    assert not sentence.supported


async def test_a_number_copied_from_the_passage_is_supported() -> None:
    response = await _generate("The ferry stops running at 4.2 metres [1].")
    (sentence,) = response.sentences
    assert sentence.supported and not sentence.unsupported_numbers
    assert response.text == "The ferry stops running at 4.2 metres [1]."
    assert [c.document_id for c in response.citations] == ["lune.txt"]


async def test_a_citation_of_a_sentence_the_passage_does_not_share_is_dropped() -> None:
    response = await _generate("Bananas are yellow [1].")
    assert response.text == "Bananas are yellow."
    assert not response.citations
    (sentence,) = response.sentences
    assert not sentence.supported and not sentence.citations
