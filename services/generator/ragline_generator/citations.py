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
    citation marker of a passage in the prompt, `... [n].` with n in 1..passages. The model still
    chooses n; the grammar only makes it cite, cite a real passage, and stop rambling.

    A sentence cannot contain a period before its marker, so "3.5" or "e.g." cannot be written:
    the price of forcing a 135M model to end each sentence with its citation.
    """
    literal = dont_know.replace("\\", "\\\\").replace('"', '\\"')
    numbers = " | ".join(f'"{n}"' for n in range(1, passages + 1))
    return (
        f'root ::= "{literal}" | sentence+\n'
        'sentence ::= [^[\\n.]+ " [" number "]." " "?\n'
        f"number ::= {numbers}\n"
    )
