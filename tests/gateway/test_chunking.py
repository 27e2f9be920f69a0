"""Token-aware chunking: sizes, overlap, boundaries and stability under small edits."""

from __future__ import annotations

import itertools

import pytest

from ragline.tokens import get_encoding
from ragline_gateway.chunking import chunk_text

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120)]
TEXT = "\n\n".join(" ".join(SENTENCES[i : i + 6]) for i in range(0, len(SENTENCES), 6))


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
    from ragline.config import ConfigError, load_config
    from ragline_gateway.config import GatewayConfig

    environ = {"GATEWAY_CHUNK_TOKENS": "50", "GATEWAY_CHUNK_OVERLAP_TOKENS": "50"}
    with pytest.raises(ConfigError, match="GATEWAY_CHUNK_OVERLAP_TOKENS"):
        load_config(GatewayConfig, environ=environ)
