"""Follow-up questions made standalone: the checks of a model's rewrite, the deterministic fallback, the
servicer's choice between them (with a scripted backend), the history in the answer's prompt, and the
real model over gRPC."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from generator_helpers import stub

from ragline.devstack import ServiceProcess
from ragline.errors import InvalidArgument, ResourceExhausted
from ragline.v1 import conversation_pb2, generator_service_pb2
from ragline_generator.backends import Finish, Generation
from ragline_generator.config import GeneratorConfig
from ragline_generator.prompt import PriorTurn, build_prompt, load_template
from ragline_generator.rewrite import Exchange, clean, fallback, key_words, needs_context, unusable
from ragline_generator.service import GeneratorServicer

EIFFEL = [Exchange("In which city is the Eiffel Tower?", "", "The Eiffel Tower is in Paris, France [1].")]
SUPER_BOWL = [Exchange("Which team won Super Bowl 50?", "", "The Denver Broncos won Super Bowl 50 [2].")]


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize(
    ("question", "needed"),
    [
        ("How tall is it?", True),
        ("And when was the tower built?", True),
        ("What about its height?", True),
        ("Who designed them?", True),
        ("Why?", True),
        ("What is the boiling point of water?", False),
        ("Who founded the University of Chicago?", False),
    ],
)
def test_a_question_needs_the_conversation_when_it_refers_back_or_is_elliptical(
    question: str, needed: bool
) -> None:
    assert needs_context(question) is needed


def test_key_words_drop_function_and_question_words_and_repeats() -> None:
    assert key_words("Which team won Super Bowl 50 and which teams lost?") == [
        "team",
        "won",
        "Super",
        "Bowl",
        "50",
        "lost",
    ]


def test_the_fallback_carries_the_previous_questions_key_words_it_lacks() -> None:
    assert fallback("How tall is it?", EIFFEL) == "How tall is it? (city Eiffel Tower)"
    assert (
        fallback("Who was the Super Bowl 50 MVP?", SUPER_BOWL) == "Who was the Super Bowl 50 MVP? (team won)"
    )
    # A chain of follow-ups carries what the previous standalone question carried.
    chained = [*EIFFEL, Exchange("How tall is it?", "How tall is the Eiffel Tower?", "It is 330 m tall [1].")]
    assert fallback("Who built it?", chained) == "Who built it? (tall Eiffel Tower)"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("How tall is it?", "copies the follow-up"),
        ("How tall is the tower in the city?", "loses the previous question's names"),
        ("How tall is the Eiffel Tower? " + "It is very tall indeed and " * 5, "too long"),
        ("The Eiffel Tower is 330 metres tall [1].", "an answer, not a question"),
        ("In 1889, the Eiffel Tower was built in Paris.", "an answer, not a question"),
        ("How tall is the Eiffel Tower compared with Big Ben, Westminster and London Bridge?", "adds words"),
        ("How tall is the Eiffel Tower?", ""),
        ("How tall is the Eiffel Tower in Paris?", ""),
    ],
)
def test_a_model_rewrite_is_refused_for_a_clear_reason(reply: str, reason: str) -> None:
    found = unusable(reply, "How tall is it?", EIFFEL)
    assert found.startswith(reason) if reason else found == ""


def test_a_rewrite_that_keeps_no_key_word_of_an_unnamed_topic_is_refused() -> None:
    history = [Exchange("What is the boiling point of water?", "", "100 degrees Celsius [1].")]
    assert unusable("And at what altitude?", "And at altitude?", history).startswith("loses")
    assert unusable("At what altitude does water boil differently?", "And at altitude?", history) == ""


def test_the_reply_is_cleaned_of_labels_quotes_and_further_lines() -> None:
    assert (
        clean('Rewritten question: "How tall is the Eiffel Tower?"\nAnswer: 330 m')
        == "How tall is the Eiffel Tower?"
    )


class ScriptedBackend:
    """A backend that replies with a fixed text, or refuses as a busy model does."""

    model_name = "scripted"
    context_window = 2048

    def __init__(self, reply: str | None) -> None:
        self.reply = reply
        self.asked: list[Generation] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return words(text)

    async def stream(self, generation: Generation, *, timeout: float) -> AsyncGenerator[str | Finish, None]:
        self.asked.append(generation)
        if self.reply is None:
            raise ResourceExhausted("busy")
        yield self.reply
        yield Finish(None, words(self.reply), "stop")


class NoDeadline:
    def time_remaining(self) -> None:
        return None


async def rewrite(backend: ScriptedBackend, question: str, history: list[conversation_pb2.Turn]) -> Any:
    servicer = GeneratorServicer(GeneratorConfig(), backend, load_template())  # type: ignore[arg-type]
    await servicer.start()
    request = generator_service_pb2.RewriteQuestionRequest(question=question, history=history)
    return await servicer.RewriteQuestion(request, NoDeadline())  # type: ignore[arg-type]


TURNS = [conversation_pb2.Turn(question="In which city is the Eiffel Tower?", answer="In Paris [1].")]


async def test_the_servicer_answers_a_usable_model_rewrite_with_a_small_budget() -> None:
    backend = ScriptedBackend("Standalone question: How tall is the Eiffel Tower?")
    reply = await rewrite(backend, "And how tall is it?", TURNS)
    assert (reply.standalone_question, reply.method) == (
        "How tall is the Eiffel Tower?",
        conversation_pb2.REWRITE_METHOD_MODEL,
    )
    (asked,) = backend.asked
    assert asked.max_tokens <= 48 and asked.temperature == 0 and asked.passages == 0
    assert "In which city is the Eiffel Tower?" in asked.messages[-1].content


@pytest.mark.parametrize("model_reply", ["And how tall is it?", "", None])
async def test_the_servicer_falls_back_when_the_rewrite_is_unusable_or_the_model_busy(
    model_reply: str | None,
) -> None:
    reply = await rewrite(ScriptedBackend(model_reply), "And how tall is it?", TURNS)
    assert reply.method == conversation_pb2.REWRITE_METHOD_FALLBACK
    assert reply.standalone_question == "And how tall is it? (city Eiffel Tower)"


@pytest.mark.parametrize(
    ("question", "history"), [("How tall is it?", []), ("What is the boiling point of water?", TURNS)]
)
async def test_a_question_without_history_or_needing_none_is_used_as_asked_without_the_model(
    question: str, history: list[conversation_pb2.Turn]
) -> None:
    backend = ScriptedBackend("never asked")
    reply = await rewrite(backend, question, history)
    assert (reply.standalone_question, reply.method) == (question, conversation_pb2.REWRITE_METHOD_NONE)
    assert backend.asked == []


async def test_an_empty_question_or_history_turn_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="question"):
        await rewrite(ScriptedBackend(""), " ", TURNS)
    with pytest.raises(InvalidArgument, match=r"history\[0\]\.question"):
        await rewrite(ScriptedBackend(""), "How tall is it?", [conversation_pb2.Turn(answer="x")])


def test_the_answer_prompt_holds_the_latest_turns_that_fit_without_their_citation_markers() -> None:
    history = [
        PriorTurn(f"question {i} " + "word " * 20, f"answer {i} [1] " + "word " * 20) for i in range(10)
    ]
    prompt = build_prompt(
        "And the last one?",
        ["A passage. " * 10],
        template=load_template(),
        order="best_first",
        count_tokens=words,
        context_window=600,
        max_tokens=50,
        dont_know="I don't know.",
        history=history,
    )
    assert 0 < prompt.turns_used < 10
    contents = [m.content for m in prompt.messages]
    kept = [text for text in contents if text.startswith(("question", "answer"))]
    assert kept[-2].startswith("question 9") and kept[-1].startswith("answer 9")
    assert not any("[1]" in text for text in kept)
    assert prompt.passages_used == 1
    assert prompt.messages[-1].content.endswith("And the last one?")


@pytest.mark.integration
async def test_the_real_model_makes_a_follow_up_standalone(generator: ServiceProcess) -> None:
    channel, client = stub(generator.address)
    async with channel:
        reply = await client.RewriteQuestion(
            generator_service_pb2.RewriteQuestionRequest(question="And how tall is it?", history=TURNS),
            timeout=60,
        )
    assert reply.method in (conversation_pb2.REWRITE_METHOD_MODEL, conversation_pb2.REWRITE_METHOD_FALLBACK)
    assert "Eiffel Tower" in reply.standalone_question and reply.model
