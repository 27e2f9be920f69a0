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
    vectors = backend.embed(
        ["a wing in a propeller slipstream", "boundary layer transition"], InputType.PASSAGE
    )
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_query_prefix_is_put_before_queries_only(backend: LocalBackend) -> None:
    via_prefix = backend.embed(["supersonic flow over a cone"], InputType.QUERY)
    literal = backend.embed(["query: supersonic flow over a cone"], InputType.PASSAGE)
    plain = backend.embed(["supersonic flow over a cone"], InputType.PASSAGE)
    np.testing.assert_allclose(via_prefix, literal, atol=1e-5)
    assert not np.allclose(via_prefix, plain, atol=1e-3)
