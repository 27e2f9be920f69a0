"""Makes a conversation's follow-up question standalone, so that retrieval and the caches can use it alone.

"And how tall is it?" means nothing to a search engine; "How tall is the Eiffel Tower?" does. The
model is asked for the rewrite in a small prompt (the latest turns within REWRITE_HISTORY_TOKENS,
answers shortened, one worked example) and at most REWRITE_MAX_TOKENS of reply. A small model's
rewrite is often unusable, so `unusable` checks it: empty, too long, a copy of a follow-up that
needs context, one that loses the previous question's key words or brings in many words nobody
said. Then `fallback` carries the previous question's key words into the follow-up, which is
deterministic and, for retrieval, nearly as good (`make eval-followups`).

A question that needs no earlier turn (no "it", "they", "there"..., not elliptical like "and
...?", "what about ...?") is used as asked, without asking the model. Everything here but the
servicer's call to the model is a pure function, tested without a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragline_generator.prompt import ChatMessage

# The reply's limit: a question is a line, never a paragraph.
REWRITE_MAX_TOKENS = 48
# The earlier turns' share of the rewrite prompt: the latest turns that fit, answers cut short.
REWRITE_HISTORY_TOKENS = 384
REWRITE_MAX_TURNS = 3
# Words of an earlier answer shown to the model: the topic, not the whole answer.
ANSWER_WORDS = 40
# How many more words than the follow-up and the carried key words a rewrite may have.
SLACK_WORDS = 12
# How many key words of its own a rewrite may add (synonyms, a determiner's noun) before it is distrusted.
MAX_NEW_WORDS = 2

SYSTEM = (
    "Rewrite the last question so that it can be understood without the conversation: replace words "
    'like "it", "its", "they" or "there" with what they refer to, and keep every other word. '
    "Reply with the rewritten question only."
)
EXAMPLE_CONVERSATION = (("In which city is the Eiffel Tower?", "The Eiffel Tower is in Paris, France."),)
EXAMPLE_QUESTION = "And how tall is it?"
EXAMPLE_REWRITE = "How tall is the Eiffel Tower?"

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
_CITATION_MARKER = re.compile(r"\s*\[\d+\]")
_LABEL = re.compile(r"^\s*(?:rewritten|standalone|last)?\s*question\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`"

# Words that refer back to something said before.
REFERRING = frozenset(
    [
        "it",
        "its",
        "it's",
        "itself",
        "they",
        "them",
        "their",
        "theirs",
        "themselves",
        "this",
        "that",
        "these",
        "those",
        "he",
        "him",
        "his",
        "she",
        "her",
        "hers",
        "there",
        "former",
        "latter",
        "same",
        "one",
        "ones",
        "such",
    ]
)
# Openings of an elliptical follow-up ("and in 1990?", "what about its height?").
ELLIPTIC_OPENINGS = ("and ", "but ", "so ", "also ", "then ", "what about ", "how about ", "what else")
# Function words and question words: never key words.
STOP_WORDS = (
    frozenset(
        [
            "a",
            "an",
            "the",
            "and",
            "or",
            "but",
            "if",
            "then",
            "else",
            "so",
            "of",
            "to",
            "in",
            "on",
            "at",
            "by",
            "for",
            "from",
            "with",
            "about",
            "into",
            "over",
            "under",
            "between",
            "through",
            "during",
            "before",
            "after",
            "above",
            "below",
            "up",
            "down",
            "out",
            "off",
            "again",
            "further",
            "once",
            "than",
            "too",
            "very",
            "can",
            "could",
            "will",
            "would",
            "shall",
            "should",
            "may",
            "might",
            "must",
            "do",
            "does",
            "did",
            "done",
            "doing",
            "be",
            "is",
            "are",
            "was",
            "were",
            "been",
            "being",
            "am",
            "have",
            "has",
            "had",
            "having",
            "what",
            "which",
            "who",
            "whom",
            "whose",
            "when",
            "where",
            "why",
            "how",
            "whether",
            "not",
            "no",
            "nor",
            "only",
            "own",
            "all",
            "any",
            "both",
            "each",
            "few",
            "more",
            "most",
            "other",
            "some",
            "i",
            "me",
            "my",
            "we",
            "our",
            "you",
            "your",
            "also",
            "just",
            "as",
            "there",
            "here",
        ]
    )
    | REFERRING
)


@dataclass(frozen=True)
class Exchange:
    """An earlier turn as the rewrite sees it: the question asked, the standalone one used, and the answer."""

    question: str
    standalone_question: str
    answer: str

    @property
    def searched(self) -> str:
        """The question retrieval used for that turn: the standalone one when there is one."""
        return self.standalone_question or self.question


def words(text: str) -> list[str]:
    """The words of `text`, in order."""
    return _WORD.findall(text)


def _norm(word: str) -> str:
    """A word's comparable form: lower case, without a plural or possessive ending."""
    word = word.lower().replace("’", "'").removesuffix("'s")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def key_words(text: str) -> list[str]:
    """The words of `text` that carry its topic (not function or question words), in order, each once."""
    seen: set[str] = set()
    kept = []
    for word in words(text):
        norm = _norm(word)
        if word.lower() in STOP_WORDS or norm in seen or (len(word) < 2 and not word.isdigit()):
            continue
        seen.add(norm)
        kept.append(word)
    return kept


def needs_context(question: str) -> bool:
    """Whether `question` refers back to the conversation (a referring word, or an elliptical opening)."""
    lowered = question.strip().lower()
    if lowered.startswith(ELLIPTIC_OPENINGS):
        return True
    return any(word.lower().replace("’", "'") in REFERRING for word in words(question)) or not key_words(
        question
    )


def _entities(text: str) -> list[str]:
    """The key words of `text` that name something: capitalised after the first word, or numbers."""
    first = words(text)[:1]
    return [
        word
        for word in key_words(text)
        if (word[0].isupper() and word not in first) or any(c.isdigit() for c in word)
    ]


def fallback(question: str, history: Sequence[Exchange]) -> str:
    """The follow-up with the previous question's key words it lacks, in brackets after it."""
    if not history:
        return question
    have = {_norm(word) for word in words(question)}
    carried = [word for word in key_words(history[-1].searched) if _norm(word) not in have]
    return f"{question.strip()} ({' '.join(carried)})" if carried else question.strip()


def clean(reply: str) -> str:
    """The model's reply as a question: its first line, without a label like "Question:" or quotes."""
    line = next((part for part in reply.strip().splitlines() if part.strip()), "")
    return _LABEL.sub("", line).strip().strip(_QUOTES).strip()


def unusable(rewrite: str, question: str, history: Sequence[Exchange]) -> str:
    """Why the model's (cleaned) `rewrite` of the follow-up `question` cannot be used; "" when it can."""
    if not rewrite:
        return "empty"
    previous = history[-1].searched if history else ""
    carried = key_words(previous)
    if len(words(rewrite)) > len(words(question)) + len(carried) + SLACK_WORDS:
        return "too long"
    if _CITATION_MARKER.search(rewrite) or (question.rstrip().endswith("?") and not rewrite.endswith("?")):
        return "an answer, not a question"
    rewritten = {_norm(word) for word in words(rewrite)}
    asked = {_norm(word) for word in words(question)}
    if rewritten == asked:
        return "copies the follow-up"
    entities = [word for word in _entities(previous) if _norm(word) not in asked]
    if any(_norm(word) not in rewritten for word in entities):
        return "loses the previous question's names"
    if carried and not any(_norm(word) in rewritten for word in carried):
        return "loses the previous question's key words"
    said = {_norm(word) for turn in history for text in (turn.searched, turn.answer) for word in words(text)}
    new = [word for word in key_words(rewrite) if _norm(word) not in said | asked]
    if len(new) > MAX_NEW_WORDS:
        return f"adds words nobody said ({', '.join(new[:4])})"
    return ""


def _shorten(answer: str) -> str:
    """An earlier answer's first ANSWER_WORDS words, without its citation markers."""
    parts = _CITATION_MARKER.sub("", answer).split()
    return " ".join(parts[:ANSWER_WORDS]) + (" ..." if len(parts) > ANSWER_WORDS else "")


def _conversation(turns: Sequence[tuple[str, str]], question: str) -> str:
    lines = [f"Q: {asked}\nA: {_shorten(answer)}" for asked, answer in turns]
    return "Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question}"


def rewrite_messages(
    question: str, history: Sequence[Exchange], count_tokens: Callable[[str], int]
) -> tuple[ChatMessage, ...]:
    """The prompt asking for the rewrite: the instruction, the worked example, and the latest turns that fit
    REWRITE_HISTORY_TOKENS (at least the last one)."""
    turns: list[tuple[str, str]] = []
    for turn in reversed(history[-REWRITE_MAX_TURNS:]):
        candidate = [(turn.question, turn.answer), *turns]
        if turns and count_tokens(_conversation(candidate, question)) > REWRITE_HISTORY_TOKENS:
            break
        turns = candidate
    return (
        ChatMessage("system", SYSTEM),
        ChatMessage("user", _conversation(EXAMPLE_CONVERSATION, EXAMPLE_QUESTION)),
        ChatMessage("assistant", EXAMPLE_REWRITE),
        ChatMessage("user", _conversation(turns, question)),
    )
