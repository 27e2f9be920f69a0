"""Chunking: token budgets, overlap by whole sentences, sections kept apart, and content-defined boundaries
that stay where they were when a document is edited."""

from __future__ import annotations

import itertools
import random

import pytest

from ragline.config import ConfigError, load_config
from ragline.tokens import get_encoding
from ragline_gateway.chunking import chunk_sections, chunk_text
from ragline_gateway.config import GatewayConfig
from ragline_gateway.formats import Section, markdown

# A plain text of 20 paragraphs of 6 numbered sentences each.
SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120)]
TEXT = "\n\n".join(" ".join(SENTENCES[i : i + 6]) for i in range(0, len(SENTENCES), 6))
# The vocabulary of the random documents that test boundaries under edits.
WORDS = [
    "alpha", "beta", "gamma", "delta", "index", "query", "model",
    "token", "vector", "search", "latency", "cache", "shard", "replica",
]  # fmt: skip


def _sentence(rng: random.Random, words: tuple[int, int] = (6, 30)) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))).capitalize() + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(1, 6)))


def _changed(before: list[str], after: list[str]) -> int:
    return len(set(after) - set(before))


def _long_markdown(rng: random.Random) -> tuple[str, list[str]]:
    """A Markdown document of 8 chapters with 3 sections of 5 paragraphs each; returns it and its paragraphs."""
    paragraphs: list[str] = []
    parts: list[str] = []
    for chapter in range(8):
        parts.append(f"# Chapter {chapter}")
        for section in range(3):
            parts.append(f"## Section {chapter}.{section}")
            for _ in range(5):
                paragraphs.append(_paragraph(rng))
                parts.append(paragraphs[-1])
    return "\n\n".join(parts), paragraphs


@pytest.mark.parametrize("overlap", [0, 16])
def test_editing_one_paragraph_of_a_long_markdown_document_changes_at_most_two_chunks(overlap: int) -> None:
    rng = random.Random(7)
    text, paragraphs = _long_markdown(rng)
    before = [c.text for c in chunk_sections(markdown(text.encode(), None), size=128, overlap=overlap)]
    assert len(before) > 40
    for paragraph in rng.sample(paragraphs, 12):
        # Words added in the middle of the paragraph change its length, which shifts greedy packing.
        middle = paragraph.index(". ") + 1 if ". " in paragraph else len(paragraph)
        edited = paragraph[:middle] + " " + _sentence(rng, (3, 12)) + paragraph[middle:]
        after_text = text.replace(paragraph, edited)
        after = [
            c.text for c in chunk_sections(markdown(after_text.encode(), None), size=128, overlap=overlap)
        ]
        assert 1 <= _changed(before, after) <= 2, paragraph


def test_an_insertion_early_in_a_long_plain_text_does_not_shift_later_boundaries() -> None:
    # Sentences of near-equal length in long paragraphs are where greedy packing shifts every later chunk.
    rng = random.Random(3)
    sentences = [_sentence(rng, (10, 13)) for _ in range(400)]

    def text(items: list[str]) -> str:
        return "\n\n".join(" ".join(items[i : i + 40]) for i in range(0, len(items), 40))

    before = [c.text for c in chunk_text(text(sentences), size=200, overlap=30)]
    for position in (2, 50, 200):
        edited = list(sentences)
        edited[position] = edited[position][:-1] + " and then some more words."
        after = [c.text for c in chunk_text(text(edited), size=200, overlap=30)]
        assert 1 <= _changed(before, after) <= 3
    assert len(before) > 30


def test_chunks_never_exceed_the_size_and_are_reasonably_full() -> None:
    rng = random.Random(11)
    text = "\n\n".join(_paragraph(rng) for _ in range(120))
    encoding = get_encoding()
    for size, overlap in [(64, 0), (128, 16), (200, 30), (512, 64)]:
        chunks = chunk_text(text, size=size, overlap=overlap)
        assert all(c.token_count == len(encoding.encode(c.text)) for c in chunks)
        assert max(c.token_count for c in chunks) <= size
        # Content-defined boundaries cost some fill compared with greedy packing, but not most of it.
        assert sum(c.token_count for c in chunks) / len(chunks) >= 0.55 * size


def test_chunks_never_span_sections_and_carry_their_metadata() -> None:
    sections = [
        Section("First page sentence one. First page sentence two.", {"page": 1}),
        Section("Second page sentence.", {"page": 2}),
    ]
    chunks = chunk_sections(sections, size=64, overlap=16)
    assert [(c.text, c.metadata) for c in chunks] == [
        ("First page sentence one. First page sentence two.", {"page": 1}),
        ("Second page sentence.", {"page": 2}),
    ]


def test_a_cut_sentence_joins_back_exactly() -> None:
    text = "".join(f"w{i} " for i in range(3000)).strip()
    chunks = chunk_text(text, size=100, overlap=0)
    assert all(c.token_count <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_paragraphs_stay_paragraphs_inside_a_chunk() -> None:
    chunks = chunk_text("- item one\n- item two\n\nNext paragraph.", size=100, overlap=0)
    assert [c.text for c in chunks] == ["- item one\n- item two\n\nNext paragraph."]


def test_chunks_respect_the_token_budget_and_cover_the_text() -> None:
    chunks = chunk_text(TEXT, size=64, overlap=16)
    assert len(chunks) > 5
    encoding = get_encoding()
    for chunk in chunks:
        assert chunk.token_count == len(encoding.encode(chunk.text))
        assert chunk.token_count <= 64 + 2  # joining pieces may add a space token at most
    joined = " ".join(c.text for c in chunks)
    for sentence in SENTENCES:
        assert sentence in joined


def test_neighbouring_chunks_overlap_by_whole_sentences() -> None:
    chunks = chunk_text(TEXT, size=64, overlap=20)
    shared = 0
    for first, second in itertools.pairwise(chunks):
        last_sentence = first.text.split(". ")[-1]
        shared += second.text.startswith(last_sentence.rstrip("."))
    assert shared >= len(chunks) // 2


def test_no_overlap_means_disjoint_chunks() -> None:
    chunks = chunk_text(TEXT, size=64, overlap=0)
    assert sum(c.text.count("Sentence number") for c in chunks) == len(SENTENCES)


def test_a_run_on_sentence_is_cut_by_tokens() -> None:
    text = "word " * 1000
    chunks = chunk_text(text, size=100, overlap=0)
    assert len(chunks) >= 10
    assert all(c.token_count <= 101 for c in chunks)


def test_a_small_edit_changes_few_chunks() -> None:
    before = chunk_text(TEXT, size=64, overlap=0)
    edited = TEXT.replace("Sentence number 60 talks", "Sentence number 60 speaks")
    after = chunk_text(edited, size=64, overlap=0)
    changed = len({c.text for c in after} - {c.text for c in before})
    assert 1 <= changed <= 2


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text(TEXT, size=32, overlap=32)


def test_the_gateway_refuses_an_overlap_as_large_as_the_chunk() -> None:
    environ = {"GATEWAY_CHUNK_TOKENS": "50", "GATEWAY_CHUNK_OVERLAP_TOKENS": "50"}
    with pytest.raises(ConfigError, match="GATEWAY_CHUNK_OVERLAP_TOKENS"):
        load_config(GatewayConfig, environ=environ)
