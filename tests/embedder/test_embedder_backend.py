"""Unit tests of the local backend, run in-process on the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np

from ragline_embedder.backends import InputType, LocalBackend


def test_describes_the_bundled_model(backend: LocalBackend) -> None:
    assert (backend.model_name, backend.dimension, backend.max_input_tokens, backend.backend) == (
        "all-MiniLM-L6-v2",
        384,
        256,
        "local",
    )


def test_vectors_are_unit_length_float32(backend: LocalBackend) -> None:
    vectors = backend.encode(["a wing in a propeller slipstream", "boundary layer transition"])
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_query_prefix_is_put_before_queries_only(backend: LocalBackend) -> None:
    text = "supersonic flow over a cone"
    assert backend.prefixes.apply(text, InputType.QUERY) == "query: " + text
    assert backend.prefixes.apply(text, InputType.PASSAGE) == text


def test_token_counts_include_special_tokens_and_overlong_texts_are_truncated(backend: LocalBackend) -> None:
    short, long = "drag of a sphere", "drag " * 600
    assert backend.count_tokens([short, long]) == [6, 602]
    # The model reads only its first 256 tokens, so text past them changes nothing.
    np.testing.assert_allclose(backend.encode([long]), backend.encode([long + "lift " * 50]), atol=1e-5)
