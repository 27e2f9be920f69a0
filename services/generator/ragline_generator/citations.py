"""Turns the [n] markers of an answer into citations of the passages they refer to.

Models write `[1]`, `[1, 2]` or `[1][2]`; all are read. A number outside the passages that
were actually in the prompt (1..passages_used) cites nothing real: it is dropped and
counted, so a model that invents sources shows up on a dashboard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragline.v1 import common_pb2

SNIPPET_CHARS = 200

_MARKER = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")


def cited_numbers(text: str, passages_used: int) -> tuple[list[int], int]:
    """The valid passage numbers cited in `text` in order of first mention, and how many markers
    referred to passages that were not in the prompt."""
    valid: list[int] = []
    invalid = 0
    for marker in _MARKER.finditer(text):
        for part in marker.group(1).split(","):
            number = int(part)
            if not 1 <= number <= passages_used:
                invalid += 1
            elif number not in valid:
                valid.append(number)
    return valid, invalid


def snippet(text: str) -> str:
    """The start of a passage for display: about SNIPPET_CHARS characters, cut at a word boundary."""
    if len(text) <= SNIPPET_CHARS:
        return text
    cut = text[:SNIPPET_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > SNIPPET_CHARS // 2 else cut).rstrip() + "…"


def citations(numbers: Sequence[int], passages: Sequence[common_pb2.Passage]) -> list[common_pb2.Citation]:
    """The Citation messages for passage `numbers` (1-based) of `passages`."""
    return [
        common_pb2.Citation(
            number=n,
            document_id=passages[n - 1].document_id,
            chunk_id=passages[n - 1].chunk_id,
            snippet=snippet(passages[n - 1].text),
            score=passages[n - 1].score,
        )
        for n in numbers
    ]


def citation_grammar(passages: int, dont_know: str) -> str:
    """A GBNF grammar for llama.cpp: either exactly `dont_know`, or sentences that each end with a
    citation marker of a passage in the prompt, `... [n]` with n in 1..passages, at most three
    sentences. The model still chooses n; the grammar only makes it cite, cite a real passage,
    and stop: a 135M model left free repeats itself until max_tokens.

    A sentence may end with a period only right before its marker, so "3.5" or "e.g." cannot be
    written: the price of forcing a small model to end each sentence with its citation.
    """
    literal = dont_know.replace("\\", "\\\\").replace('"', '\\"')
    numbers = " | ".join(f'"{n}"' for n in range(1, passages + 1))
    return (
        f'root ::= "{literal}" | sentence sentence? sentence?\n'
        'sentence ::= [^[\\n.]+ "."? " [" number "]" "."? " "?\n'
        f"number ::= {numbers}\n"
    )


_WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about which passage a sentence came from.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "which",
        "with",
    ]
)
# How much more of a sentence's words another passage must hold before a citation is moved to it.
REPAIR_MARGIN = 0.25
# A "[" followed by more than this many characters without "]" is text, not a marker being written.
MAX_MARKER_CHARS = 16


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


class CitationRepairer:
    """Checks each [n] against the sentence it ends and re-points it to the passage that holds the sentence.

    Small models cite by position more than by content (services/generator/README.md). Each
    marker's claim, the text since the previous marker, is compared with every passage; when
    another passage holds at least REPAIR_MARGIN more of the claim's words than the cited one,
    the marker is rewritten to cite that passage. Text streams through as it comes, except a
    marker still being written, so a streamed answer and the final one agree; `repaired`
    counts the rewritten numbers.
    """

    def __init__(self, passages: Sequence[str], *, enabled: bool = True) -> None:
        self._passages = [_words(p) for p in passages]
        self._enabled = enabled
        self._pending = ""
        self._claim = ""
        self.text = ""
        self.repaired = 0

    def feed(self, delta: str) -> str:
        """Takes the model's next text; returns what can be released now (all but an unfinished marker)."""
        self._pending += delta
        cut = self._pending.rfind("[")
        if cut != -1 and "]" not in self._pending[cut:] and len(self._pending) - cut <= MAX_MARKER_CHARS:
            ready, self._pending = self._pending[:cut], self._pending[cut:]
        else:
            ready, self._pending = self._pending, ""
        return self._release(ready)

    def flush(self) -> str:
        """Releases whatever text is left once the model has finished."""
        rest, self._pending = self._pending, ""
        return self._release(rest)

    def _release(self, text: str) -> str:
        out: list[str] = []
        start = 0
        for marker in _MARKER.finditer(text):
            claim = _words(self._claim + text[start : marker.start()])
            numbers = [self._best(int(part), claim) for part in marker.group(1).split(",")]
            out.append(text[start : marker.start()])
            out.append("[" + ", ".join(str(n) for n in dict.fromkeys(numbers)) + "]")
            self._claim = ""
            start = marker.end()
        out.append(text[start:])
        self._claim += text[start:]
        released = "".join(out)
        self.text += released
        return released

    def _best(self, number: int, claim: set[str]) -> int:
        if not self._enabled or not claim or not 1 <= number <= len(self._passages):
            return number
        support = [len(claim & words) / len(claim) for words in self._passages]
        best = max(range(len(support)), key=support.__getitem__) + 1
        if support[best - 1] - support[number - 1] >= REPAIR_MARGIN:
            self.repaired += 1
            return best
        return number
