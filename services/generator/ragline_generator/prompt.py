"""Builds the chat messages that ask the model for a cited answer, within the token budget.

The prompt is a pure function of the question, the passages and a token counter, so its
budgeting is tested without a model. Passages are added best first; the first one that no
longer fits is cut at a sentence boundary (a partial good passage beats a whole worse one)
and the rest are left out. `passages_used` tells the caller how many made it in, which is
also the range of citation numbers the answer may use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragline.errors import InvalidArgument

# Chat templates wrap each message in role markers (ChatML: `<|im_start|>role\n ... <|im_end|>\n`,
# about 5 tokens); 8 per message plus 8 for the reply header leaves a margin for other templates.
MESSAGE_OVERHEAD_TOKENS = 8
REPLY_OVERHEAD_TOKENS = 8

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD_END = re.compile(r"\s+")

# A one-shot example as chat turns: a 135M model imitates a demonstrated answer far better than it
# follows a described format. The cited passage is not the last one, so the example does not teach
# "always cite the last passage".
_EXAMPLE_PASSAGES = (
    "Cats sleep between 12 and 16 hours a day.",
    "The Nile is the longest river in Africa.",
    "Copper is a good conductor of electricity.",
)
_EXAMPLE_QUESTION = "What is the longest river in Africa?"
_EXAMPLE_ANSWER = "The Nile is the longest river in Africa [2]."


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """The messages to send and how many of the given passages they contain."""

    messages: tuple[ChatMessage, ...]
    passages_used: int
    tokens: int
    """The prompt's size by the budget's count (message contents plus template overhead)."""


def system_instruction(dont_know: str) -> str:
    """The instruction that asks for an answer from the passages only, with [n] citations."""
    return (
        "Answer the question using only the numbered passages. Right after each statement, cite the "
        "passage that supports it with its number in square brackets, like [1]. If the passages do not "
        f"contain the answer, reply exactly: {dont_know}"
    )


def user_message(question: str, passages: Sequence[str]) -> str:
    """The passages numbered from [1], then the question."""
    numbered = "\n".join(f"[{n}] {text}" for n, text in enumerate(passages, start=1))
    return f"Passages:\n{numbered}\n\nQuestion: {question}"


def build_prompt(
    question: str,
    passages: Sequence[str],
    *,
    count_tokens: Callable[[str], int],
    context_window: int,
    max_tokens: int,
    dont_know: str,
) -> Prompt:
    """The prompt for `question` with as many of `passages` (best first) as fit.

    The budget is `context_window` minus `max_tokens` for the answer and the template overhead.
    Raises InvalidArgument when even the question without passages does not fit.
    """
    fixed = (
        ChatMessage("system", system_instruction(dont_know)),
        ChatMessage("user", user_message(_EXAMPLE_QUESTION, _EXAMPLE_PASSAGES)),
        ChatMessage("assistant", _EXAMPLE_ANSWER),
    )
    fixed_tokens = (
        (len(fixed) + 1) * MESSAGE_OVERHEAD_TOKENS
        + REPLY_OVERHEAD_TOKENS
        + sum(count_tokens(m.content) for m in fixed)
    )
    budget = context_window - max_tokens - fixed_tokens
    bare = count_tokens(user_message(question, []))
    if bare > budget:
        question_tokens = count_tokens(question)
        limit = question_tokens + budget - bare
        raise InvalidArgument(
            f"the question is {question_tokens} tokens long, but at most {max(limit, 0)} fit in the "
            f"model's {context_window}-token context with max_tokens={max_tokens}; shorten the question "
            "or ask for fewer tokens",
            field="question",
        )

    used: list[str] = []
    size = bare
    for text in passages:
        candidate = count_tokens(user_message(question, [*used, text]))
        if candidate <= budget:
            used.append(text)
            size = candidate
            continue
        cut = _truncate(text, lambda part: count_tokens(user_message(question, [*used, part])) <= budget)
        if cut:
            used.append(cut)
            size = count_tokens(user_message(question, used))
        break
    messages = (*fixed, ChatMessage("user", user_message(question, used)))
    return Prompt(messages=messages, passages_used=len(used), tokens=fixed_tokens + size)


def _truncate(text: str, fits: Callable[[str], bool]) -> str:
    """The longest prefix of `text` ending at a sentence boundary that `fits`; at a word boundary when
    not even the first sentence fits; empty when nothing does."""
    for boundary in (_SENTENCE_END, _WORD_END):
        ends = [m.start() for m in boundary.finditer(text)]
        low, high = 0, len(ends)
        # Binary search over the boundaries: the longest prefix whose count still fits the budget.
        while low < high:
            middle = (low + high + 1) // 2
            if fits(text[: ends[middle - 1]]):
                low = middle
            else:
                high = middle - 1
        if low:
            return text[: ends[low - 1]]
    return ""
