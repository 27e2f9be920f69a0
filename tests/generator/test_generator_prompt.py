"""Prompt budgeting and layout, with a word counter standing in for the model's tokenizer, and
loading the prompt template from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.config import ConfigError
from ragline.errors import InvalidArgument
from ragline_generator import prompt as prompt_module
from ragline_generator.prompt import PassageOrder, Prompt, build_prompt, load_template

TEMPLATE = load_template()


def words(text: str) -> int:
    return len(text.split())


def user_message(question: str, passages: list[str], order: PassageOrder = "best_first") -> str:
    return prompt_module.user_message(TEMPLATE, question, passages, order)


def build(
    question: str,
    passages: list[str],
    context_window: int,
    max_tokens: int = 10,
    order: PassageOrder = "best_first",
) -> Prompt:
    return build_prompt(
        question,
        passages,
        template=TEMPLATE,
        order=order,
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
    assert prompt.sources == (0, 1)
    assert prompt.messages[0].role == "system"
    assert "[1]" in prompt.messages[0].content and "I don't know." in prompt.messages[0].content


def test_best_last_lists_the_best_passage_last_and_maps_numbers_back() -> None:
    prompt = build("Where is it?", ["Best.", "Second.", "Third."], context_window=10_000, order="best_last")
    assert (
        prompt.messages[-1].content
        == "Passages:\n[1] Third.\n[2] Second.\n[3] Best.\n\nQuestion: Where is it?"
    )
    # [3] is the best passage (index 0), [1] the worst.
    assert prompt.sources == (2, 1, 0)
    # The one-shot example is laid out the same way, its cited passage in the middle either way.
    example = prompt.messages[1].content
    assert example.index("Copper") < example.index("Nile") < example.index("Cats")
    assert prompt.messages[2].content.endswith("[2].")


def test_best_last_cuts_the_worst_passage_that_fits_and_lists_it_first() -> None:
    question = "Q?"
    passages = ["Best one.", "Next one. Cut here."]
    room = words(user_message(question, ["Best one.", "Next one."], order="best_last"))
    prompt = build(question, passages, context_window=fixed_cost() + room + 10, order="best_last")
    assert prompt.passages_used == 2
    assert "[1] Next one.\n[2] Best one.\n" in prompt.messages[-1].content
    assert prompt.sources == (1, 0)


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


def test_the_built_in_template_is_the_packaged_file() -> None:
    assert "{dont_know}" in TEMPLATE.system
    assert TEMPLATE.passage == "[{number}] {text}"
    assert len(TEMPLATE.example_passages) == 3 and TEMPLATE.example_answer.endswith("[2].")


def test_a_template_file_changes_the_wording(tmp_path: Path) -> None:
    path = tmp_path / "prompt.toml"
    path.write_text(
        'system = "Only from sources. Else say {dont_know}"\n'
        'user = "Q: {question}\\nSources:\\n{passages}"\n'
        'passage = "({number}) {text}"\n'
    )
    template = load_template(str(path))
    prompt = build_prompt(
        "Why?",
        ["A.", "B."],
        template=template,
        order="best_first",
        count_tokens=words,
        context_window=1000,
        max_tokens=10,
        dont_know="No idea.",
    )
    # Without an [example] table there is no one-shot example.
    assert [m.role for m in prompt.messages] == ["system", "user"]
    assert prompt.messages[0].content == "Only from sources. Else say No idea."
    assert prompt.messages[1].content == "Q: Why?\nSources:\n(1) A.\n(2) B."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('system = "x"\nuser = "{question}"\npassage = "[{number}] {text}"\n', "`user` must use"),
        ('system = "{secret}"\nuser = "{passages}{question}"\npassage = "{number}{text}"\n', "`system`"),
        ('system = "x"\nuser = "{passages}{question}"\n', "`passage` must be a string"),
        ('system = "x\n', "cannot read"),
        (
            'system = "x"\nuser = "{passages}{question}"\npassage = "{number}{text}"\n[example]\npassages = [1]\n',
            "example.passages",
        ),
    ],
)
def test_a_bad_template_file_is_a_configuration_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompt.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_template(str(path))
    assert message in str(caught.value) and "GENERATOR_PROMPT_TEMPLATE" in str(caught.value)


def test_a_missing_template_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_template(str(tmp_path / "missing.toml"))
