"""Builds the chat messages that ask the model for a cited answer, within the token budget.

The prompt is a pure function of the question, the passages, a template and a token counter,
so its budgeting is tested without a model. Passages are added in rank order; the first one
that no longer fits is cut at a sentence boundary (a partial good passage beats a whole worse
one) and the rest are left out. `passages_used` tells the caller how many made it in, which is
also the range of citation numbers the answer may use.

A conversation's earlier turns (`history`) go between the instruction and the question as user and
assistant messages, newest kept first, within HISTORY_SHARE of the budget left beside the bare
question, so they never crowd out the passages; their old citation markers are dropped, since the
numbers would point at this prompt's passages.

Passages are numbered [1], [2], ... in the order they are listed. `best_first` lists them in
rank order; `best_last` lists them worst first, so the best passage is the last and highest
numbered, nearest the question, because small models favour the passage nearest the question
(measured in the README). `Prompt.sources` maps each number back to the passage it shows.
"""

from __future__ import annotations

import importlib.resources
import re
import string
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ragline.config import ConfigError
from ragline.errors import InvalidArgument

# Chat templates wrap each message in role markers (ChatML: `<|im_start|>role\n ... <|im_end|>\n`,
# about 5 tokens); 8 per message plus 8 for the reply header leaves a margin for other templates.
MESSAGE_OVERHEAD_TOKENS = 8
REPLY_OVERHEAD_TOKENS = 8
DEFAULT_TEMPLATE = "prompt_template.toml"
# The share of the budget beside the bare question that a conversation's earlier turns may take.
HISTORY_SHARE = 0.4

PassageOrder = Literal["best_first", "best_last"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD_END = re.compile(r"\s+")
_CITATION_MARKER = re.compile(r"\s*\[\d+\]")
# The placeholders each format string may use, and those it must use.
_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "system": ({"dont_know"}, set()),
    "user": ({"passages", "question"}, {"passages", "question"}),
    "passage": ({"number", "text"}, {"number", "text"}),
}


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str
    content: str


@dataclass(frozen=True)
class PromptTemplate:
    """The wording of the prompt, as Python format strings, and an optional one-shot example."""

    system: str
    """The system instruction; `{dont_know}` is replaced by the configured "I don't know" answer."""
    user: str
    """The user message; `{passages}` is replaced by the numbered passages, `{question}` by the question."""
    passage: str
    """One passage line; `{number}` and `{text}` are replaced."""
    example_question: str = ""
    """The example's question; empty means no example."""
    example_passages: tuple[str, ...] = ()
    """The example's passages, in rank order."""
    example_answer: str = ""
    """The example's cited answer."""


@dataclass(frozen=True)
class Prompt:
    """The messages to send and how many of the given passages they contain."""

    messages: tuple[ChatMessage, ...]
    passages_used: int
    tokens: int
    """The prompt's size by the budget's count (message contents plus template overhead)."""
    sources: tuple[int, ...]
    """`sources[n - 1]` is the index, among the given passages, of the passage numbered [n]."""
    turns_used: int = 0
    """How many of the latest earlier turns of the conversation the prompt holds."""


@dataclass(frozen=True)
class PriorTurn:
    """An earlier turn of the conversation: what was asked and answered."""

    question: str
    answer: str


def load_template(path: str = "") -> PromptTemplate:
    """The template in the TOML file `path` (see prompt_template.toml), or the built-in one.

    Raises ConfigError naming GENERATOR_PROMPT_TEMPLATE when the file is missing or malformed.
    """
    try:
        if path:
            text = Path(path).expanduser().read_text(encoding="utf-8")
        else:
            text = importlib.resources.files(__package__).joinpath(DEFAULT_TEMPLATE).read_text("utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"GENERATOR_PROMPT_TEMPLATE={path!r}: cannot read the template: {exc}") from exc
    for key, (allowed, required) in _FIELDS.items():
        value = data.get(key)
        if not isinstance(value, str):
            raise ConfigError(f"GENERATOR_PROMPT_TEMPLATE={path!r}: `{key}` must be a string")
        try:
            used = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        except ValueError as exc:
            raise ConfigError(f"GENERATOR_PROMPT_TEMPLATE={path!r}: `{key}`: {exc}") from exc
        if used - allowed or required - used:
            raise ConfigError(
                f"GENERATOR_PROMPT_TEMPLATE={path!r}: `{key}` must use {_braced(required) or 'no field'} "
                f"and may use {_braced(allowed)}; it uses {_braced(used) or 'none'}"
            )
    example = data.get("example", {})
    passages = example.get("passages", []) if isinstance(example, dict) else None
    if not isinstance(passages, list) or not all(isinstance(p, str) for p in passages):
        raise ConfigError(f"GENERATOR_PROMPT_TEMPLATE={path!r}: `example.passages` must be a list of strings")
    return PromptTemplate(
        system=data["system"],
        user=data["user"],
        passage=data["passage"],
        example_question=str(example.get("question", "")),
        example_passages=tuple(passages),
        example_answer=str(example.get("answer", "")),
    )


def _braced(fields: set[str]) -> str:
    return ", ".join(f"{{{f}}}" for f in sorted(fields))


def listed(count: int, order: PassageOrder) -> tuple[int, ...]:
    """The indexes of `count` passages given best first, in the order the prompt lists them."""
    return tuple(range(count)) if order == "best_first" else tuple(reversed(range(count)))


def user_message(
    template: PromptTemplate, question: str, passages: Sequence[str], order: PassageOrder
) -> str:
    """The passages (given best first) listed in `order` and numbered from [1] as listed, then the
    question."""
    lines = [
        template.passage.format(number=n, text=passages[index])
        for n, index in enumerate(listed(len(passages), order), start=1)
    ]
    return template.user.format(passages="\n".join(lines), question=question)


def build_prompt(
    question: str,
    passages: Sequence[str],
    *,
    template: PromptTemplate,
    order: PassageOrder,
    count_tokens: Callable[[str], int],
    context_window: int,
    max_tokens: int,
    dont_know: str,
    history: Sequence[PriorTurn] = (),
) -> Prompt:
    """The prompt for `question` with as many of `passages` (best first) as fit, after as many of the
    latest `history` turns (oldest first) as fit their share.

    The budget is `context_window` minus `max_tokens` for the answer and the template overhead.
    Raises InvalidArgument when even the question without passages does not fit.
    """
    fixed = [ChatMessage("system", template.system.format(dont_know=dont_know))]
    if template.example_question:
        example = user_message(template, template.example_question, template.example_passages, order)
        fixed += [ChatMessage("user", example), ChatMessage("assistant", template.example_answer)]
    fixed_tokens = (
        (len(fixed) + 1) * MESSAGE_OVERHEAD_TOKENS
        + REPLY_OVERHEAD_TOKENS
        + sum(count_tokens(m.content) for m in fixed)
    )
    budget = context_window - max_tokens - fixed_tokens

    def size(texts: Sequence[str]) -> int:
        return count_tokens(user_message(template, question, texts, order))

    bare = size([])
    if bare > budget:
        question_tokens = count_tokens(question)
        limit = question_tokens + budget - bare
        raise InvalidArgument(
            f"the question is {question_tokens} tokens long, but at most {max(limit, 0)} fit in the "
            f"model's {context_window}-token context with max_tokens={max_tokens}; shorten the question "
            "or ask for fewer tokens",
            field="question",
        )

    turns, turn_tokens = _latest_turns(history, count_tokens, int((budget - bare) * HISTORY_SHARE))
    fixed, fixed_tokens, budget = [*fixed, *turns], fixed_tokens + turn_tokens, budget - turn_tokens
    used: list[str] = []
    used_size = bare
    for text in passages:
        candidate = size([*used, text])
        if candidate <= budget:
            used.append(text)
            used_size = candidate
            continue
        cut = _truncate(text, lambda part: size([*used, part]) <= budget)
        if cut:
            used.append(cut)
            used_size = size(used)
        break
    messages = (*fixed, ChatMessage("user", user_message(template, question, used, order)))
    return Prompt(
        messages=messages,
        passages_used=len(used),
        tokens=fixed_tokens + used_size,
        sources=listed(len(used), order),
        turns_used=len(turns) // 2,
    )


def _latest_turns(
    history: Sequence[PriorTurn], count_tokens: Callable[[str], int], budget: int
) -> tuple[tuple[ChatMessage, ...], int]:
    """The latest turns of `history` as user and assistant messages, oldest first, that fit in `budget`
    tokens, and the tokens they take with their overhead."""
    kept: list[ChatMessage] = []
    spent = 0
    for turn in reversed(history):
        pair = [
            ChatMessage("user", turn.question),
            ChatMessage("assistant", _CITATION_MARKER.sub("", turn.answer)),
        ]
        cost = sum(count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in pair)
        if spent + cost > budget:
            break
        kept[:0] = pair
        spent += cost
    return tuple(kept), spent


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
