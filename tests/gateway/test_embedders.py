"""How the gateway finds the embedder of a model: asked once, again when a model is missing, not on every call."""

from __future__ import annotations

from typing import Any

import pytest

from ragline.errors import FailedPrecondition
from ragline.v1 import embedder_service_pb2
from ragline_gateway import embedders
from ragline_gateway.embedders import Embedders


class CountingEmbedder:
    """Answers GetModelInfo with `model` and counts the questions."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.asked = 0

    async def GetModelInfo(self, request: Any, timeout: float) -> embedder_service_pb2.GetModelInfoResponse:
        self.asked += 1
        return embedder_service_pb2.GetModelInfoResponse(model=self.model, dimension=384)


async def test_a_model_no_embedder_serves_asks_the_embedders_at_most_once_a_refresh_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default, other = CountingEmbedder("model-a"), CountingEmbedder("model-b")
    found = Embedders(default, [other])  # type: ignore[list-item]
    assert await found.for_model("model-b") is other
    assert await found.for_model("model-a") is default
    assert (default.asked, other.asked) == (1, 1)  # one refresh found both

    for _ in range(5):
        with pytest.raises(FailedPrecondition, match="no embedder of this gateway serves model-c"):
            await found.for_model("model-c")

    assert (default.asked, other.asked) == (2, 2)  # the first miss asked; the next four did not

    other.model = "model-c"  # an embedder of model-c took the other's place
    monkeypatch.setattr(embedders, "_REFRESH_SECONDS", 0.0)
    assert await found.for_model("model-c") is other
    assert (default.asked, other.asked) == (3, 3)


async def test_a_model_not_looked_for_before_is_asked_for_at_once() -> None:
    # A collection moved to another model right after the gateway asked: its first Search finds the new embedder.
    default = CountingEmbedder("model-a")
    found = Embedders(default, [])  # type: ignore[arg-type]
    assert await found.for_model("model-a") is default
    default.model = "model-c"
    assert await found.for_model("model-c") is default
    assert default.asked == 2


async def test_an_embedder_that_changed_model_is_looked_for_again_at_once() -> None:
    default = CountingEmbedder("model-a")
    found = Embedders(default, [])  # type: ignore[arg-type]
    assert await found.for_model("model-a") is default
    default.model = "model-b"
    with pytest.raises(FailedPrecondition, match="now serves model-b"):
        found.check("model-a", embedder_service_pb2.EmbedResponse(model="model-b"))
    with pytest.raises(FailedPrecondition, match=r"serves model-a \(they serve: model-b\)"):
        await found.for_model("model-a")
    assert default.asked == 2
