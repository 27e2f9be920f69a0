"""Unit tests of the servicer's life cycle, in-process."""

from __future__ import annotations

import pytest

from ragline.config import load_config
from ragline.errors import Unavailable
from ragline_embedder.backends import EmbeddingBackend
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.service import EmbedderServicer


async def test_not_ready_until_the_model_is_loaded(backend: EmbeddingBackend) -> None:
    servicer = EmbedderServicer(load_config(EmbedderConfig, environ={}), lambda: backend)
    with pytest.raises(Unavailable, match="still starting"):
        await servicer.check_ready()
    await servicer.start()
    await servicer.check_ready()
    await servicer.stop()
