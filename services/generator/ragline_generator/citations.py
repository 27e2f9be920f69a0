"""Turns the [n] markers of an answer into citations of the passages they refer to.

Models write `[1]`, `[1, 2]` or `[1][2]`; all are read. A number outside the passages that
were actually in the prompt (1..passages_used) cites nothing real: it is dropped and
counted, so a model that invents sources shows up on a dashboard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragline.snippets import snippet
from ragline.v1 import common_pb2

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


# Abbreviations whose period does not end a sentence; the grammar lets each be followed by ". ".
ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf", "approx", "Mr", "Mrs", "Ms", "Dr", "St", "Jr", "No", "Co")
MAX_SENTENCES = 2


def citation_grammar(passages: int, dont_know: str) -> str:
    """A GBNF grammar for llama.cpp: either exactly `dont_know`, or sentences that each end with a
    citation marker of a passage in the prompt, `... [n]` with n in 1..passages, at most
    MAX_SENTENCES sentences. The model still chooses n; the grammar only makes it cite, cite a real
    passage, and stop: a 135M model left free repeats itself until max_tokens (and with three
    sentences allowed, it mostly spent the third repeating the first).

    Inside a sentence a period may be followed by a letter or digit ("4.2", "U.S.") or end one of
    ABBREVIATIONS ("e.g. "); any other period ends the sentence, right before its marker.
    """
    literal = dont_know.replace("\\", "\\\\").replace('"', '\\"')
    numbers = " | ".join(f'"{n}"' for n in range(1, passages + 1))
    abbreviations = " | ".join(f'"{a}"' for a in ABBREVIATIONS)
    optional = " sentence?" * (MAX_SENTENCES - 1)
    return (
        f'root ::= "{literal}" | sentence{optional}\n'
        'sentence ::= piece+ "."? " [" number "]" "."? " "?\n'
        'piece ::= [^[\\n.] | "." [0-9A-Za-z] | abbreviation ". "\n'
        f"abbreviation ::= {abbreviations}\n"
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


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, thousands separators removed ("1,200" and "1200" are one)."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


class CitationRepairer:
    """Checks each [n] against the sentence it ends: re-points or drops it, and records the sentence's support.

    Small models cite by position more than by content (services/generator/README.md). Each
    marker's claim, the text since the previous marker, is compared with every passage; when
    another passage holds at least REPAIR_MARGIN more of the claim's words than the cited one,
    or the cited one holds none of them, the marker is rewritten to cite the best passage, and a
    marker whose claim no passage shares a word with is dropped. Text streams through as it comes,
    except a marker still being written and the spaces before it, so a streamed answer and the final one agree; `repaired`
    counts the rewritten or dropped numbers. `sentences` says, per claim, which passages it cites
    and whether they back it: shared words, and every number it states in a cited passage.
    """

    def __init__(self, passages: Sequence[str], *, enabled: bool = True) -> None:
        self._passages = [_words(p) for p in passages]
        self._numbers = [numbers_in(p) for p in passages]
        self._enabled = enabled
        self._pending = ""
        self._claim = ""
        self.text = ""
        self.repaired = 0
        self.sentences: list[common_pb2.SentenceSupport] = []

    def feed(self, delta: str) -> str:
        """Takes the model's next text; returns what can be released now (all but an unfinished marker)."""
        self._pending += delta
        cut = self._pending.rfind("[")
        if cut != -1 and "]" not in self._pending[cut:] and len(self._pending) - cut <= MAX_MARKER_CHARS:
            ready, self._pending = self._pending[:cut], self._pending[cut:]
        else:
            ready, self._pending = self._pending, ""
        # Trailing spaces wait too: they belong to a marker that may follow and may be dropped.
        kept = ready.rstrip(" ")
        self._pending = ready[len(kept) :] + self._pending
        return self._release(kept)

    def flush(self) -> str:
        """Releases whatever text is left once the model has finished, and records its last claim."""
        rest, self._pending = self._pending, ""
        released = self._release(rest)
        self._record(self._claim, [])
        self._claim = ""
        return released

    def _release(self, text: str) -> str:
        out: list[str] = []
        start = 0
        for marker in _MARKER.finditer(text):
            claim = self._claim + text[start : marker.start()]
            words = _words(claim)
            chosen = [self._best(int(part), words) for part in marker.group(1).split(",")]
            numbers = [n for n in dict.fromkeys(chosen) if n is not None]
            before = text[start : marker.start()]
            # A dropped marker takes the space before it along, as far as this piece of text holds it.
            out.append(before if numbers else before.rstrip())
            if numbers:
                out.append("[" + ", ".join(str(n) for n in numbers) + "]")
            self._record(claim, numbers)
            self._claim = ""
            start = marker.end()
        out.append(text[start:])
        self._claim += text[start:]
        released = "".join(out)
        self.text += released
        return released

    def _record(self, claim: str, numbers: list[int]) -> None:
        """Adds a claim's support to `sentences`; a marker right after another joins the previous claim."""
        text = claim.strip(" .\n")
        if not _WORD.search(text.lower()):
            if self.sentences and numbers:
                previous = self.sentences.pop()
                self._record(previous.text, [*previous.citations, *numbers])
            return
        valid = [n for n in numbers if 1 <= n <= len(self._passages)]
        cited_words = set().union(*(self._passages[n - 1] for n in valid))
        cited_numbers = set().union(*(self._numbers[n - 1] for n in valid))
        words = _words(text)
        support = len(words & cited_words) / len(words) if words else 0.0
        missing = sorted(numbers_in(text) - cited_numbers)
        self.sentences.append(
            common_pb2.SentenceSupport(
                text=text,
                citations=list(dict.fromkeys(numbers)),
                supported=bool(valid) and support > 0 and not missing,
                support=support,
                unsupported_numbers=missing,
            )
        )

    def _best(self, number: int, claim: set[str]) -> int | None:
        """The passage a marker should cite: `number`, a better-supported passage, or None to drop it."""
        if not self._enabled or not claim or not 1 <= number <= len(self._passages):
            return number
        support = [len(claim & words) / len(claim) for words in self._passages]
        best = max(range(len(support)), key=support.__getitem__) + 1
        if support[best - 1] == 0:
            self.repaired += 1
            return None
        if support[best - 1] - support[number - 1] >= REPAIR_MARGIN or support[number - 1] == 0:
            self.repaired += 1
            return best
        return number
