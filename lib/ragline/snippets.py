"""The short start of a passage that a citation shows, shared by the generator and the gateway's extractive answers."""

from __future__ import annotations

SNIPPET_CHARS = 200


def snippet(text: str) -> str:
    """The start of a passage for display: about SNIPPET_CHARS characters, cut at a word boundary."""
    if len(text) <= SNIPPET_CHARS:
        return text
    cut = text[:SNIPPET_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > SNIPPET_CHARS // 2 else cut).rstrip() + "…"
