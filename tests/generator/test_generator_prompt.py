"""Prompt budgeting, with a word counter standing in for the model's tokenizer."""

from __future__ import annotations

import pytest

from ragline.errors import InvalidArgument
from ragline_generator.prompt import Prompt, build_prompt, user_message


def words(text: str) -> int:
    return len(text.split())


def build(question: str, passages: list[str], context_window: int, max_tokens: int = 10) -> Prompt:
    return build_prompt(
        question,
        passages,
        count_tokens=words,
        context_window=context_window,
        max_tokens=max_tokens,
        dont_know="I don't know.",
    )


def fixed_cost() -> int:
    """What the prompt costs besides the last user message (instruction, example, template overhead)."""
    return build("", [], context_window=10_000).tokens - words(user_message("", []))


def test_all_passages_fit_and_are_numbered_in_rank_order() -> None:
    prompt = build("Where is it?", ["Alpha one.", "Beta two."], context_window=10_000)
    assert prompt.passages_used == 2
    assert prompt.messages[-1].content == "Passages:\n[1] Alpha one.\n[2] Beta two.\n\nQuestion: Where is it?"
    assert prompt.messages[0].role == "system"
    assert "[1]" in prompt.messages[0].content and "I don't know." in prompt.messages[0].content


def test_last_passage_that_does_not_fit_is_cut_at_a_sentence_boundary() -> None:
    question = "Where is it?"
    first = "One two three."
    second = "Four five six. Seven eight nine. Ten eleven twelve."
    # Room for the first passage and the first two sentences of the second, not the third.
    room = words(user_message(question, [first, "Four five six. Seven eight nine."]))
    prompt = build(question, [first, second, "Never reached."], context_window=fixed_cost() + room + 10)
    assert prompt.passages_used == 2
    assert prompt.messages[-1].content.endswith(
        "[1] One two three.\n[2] Four five six. Seven eight nine.\n\nQuestion: Where is it?"
    )
    assert prompt.tokens == fixed_cost() + room


def test_a_better_passage_is_cut_rather_than_dropped_for_a_shorter_worse_one() -> None:
    question = "Q?"
    long_best = " ".join(f"Sentence {i} here." for i in range(50))
    room = words(user_message(question, ["Sentence 0 here. Sentence 1 here."]))
    prompt = build(question, [long_best, "Short."], context_window=fixed_cost() + room + 10)
    assert prompt.passages_used == 1
    assert "[1] Sentence 0 here. Sentence 1 here.\n" in prompt.messages[-1].content
    assert "Short." not in prompt.messages[-1].content


def test_a_passage_without_sentence_boundaries_is_cut_between_words() -> None:
    question = "Q?"
    room = words(user_message(question, ["a b c"]))
    prompt = build(question, ["a b c d e f g h"], context_window=fixed_cost() + room + 10)
    assert prompt.passages_used == 1
    assert "[1] a b c\n" in prompt.messages[-1].content


def test_no_passage_fits_gives_zero_passages_used() -> None:
    question = "Q?"
    prompt = build(question, ["a b c"], context_window=fixed_cost() + words(user_message(question, [])) + 10)
    assert prompt.passages_used == 0


def test_a_question_that_does_not_fit_is_invalid_and_says_how_long_it_is() -> None:
    question = " ".join(["word"] * 100)
    with pytest.raises(InvalidArgument) as caught:
        build(question, ["a"], context_window=fixed_cost() + 60, max_tokens=10)
    assert caught.value.field == "question"
    assert "100 tokens" in caught.value.message
    assert "context" in caught.value.message


def test_max_tokens_is_reserved_for_the_answer() -> None:
    question = "Q?"
    passage = "One two three."
    window = fixed_cost() + words(user_message(question, [passage])) + 10
    assert build(question, [passage], context_window=window, max_tokens=10).passages_used == 1
    # Two more answer tokens leave room for one word of the three.
    assert (
        "[1] One\n" in build(question, [passage], context_window=window, max_tokens=12).messages[-1].content
    )
