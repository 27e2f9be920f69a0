"""The embedders the gateway reaches, by the model each serves.

An embedder serves one model (its GetModelInfo says which), and a collection's vectors come from
one model, so every text of a collection is embedded by an embedder of that collection's model:
EMBEDDER_ADDR's for new collections, or one of MORE_EMBEDDER_ADDRS' for collections created
with or migrated to another model. The gateway learns which model each serves from GetModelInfo,
asked again when a model is not found (an embedder may have started or changed since). A model
that a refresh did not find is asked for again at most once every `_REFRESH_SECONDS`: otherwise every
Search of a collection whose model no embedder serves would ask every embedder again before failing.
A model not looked for before is asked for at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from ragline.errors import FailedPrecondition
from ragline.v1 import embedder_service_pb2, embedder_service_pb2_grpc

_INFO_TIMEOUT_SECONDS = 2.0
# An embedder started for a model that was missing is found within this long by the calls that need it.
_REFRESH_SECONDS = 1.0
# Missing models remembered; past this many the memory starts again (model names come from collections).
_MAX_MISSING = 1000


class Embedders:
    """The default embedder's stub and those of the others, found by model."""

    def __init__(
        self,
        default: embedder_service_pb2_grpc.EmbedderServiceStub,
        more: Sequence[embedder_service_pb2_grpc.EmbedderServiceStub],
    ) -> None:
        self.default = default
        self._all = [default, *more]
        self._by_model: dict[str, tuple[embedder_service_pb2_grpc.EmbedderServiceStub, int]] = {}
        self._refreshing: asyncio.Lock | None = None
        # By model: when a refresh that started then (monotonic) did not find it.
        self._missing: dict[str, float] = {}

    async def refresh(self) -> None:
        """Asks every embedder which model it serves; one that does not answer is left out until it does."""
        replies = await asyncio.gather(
            *(
                stub.GetModelInfo(embedder_service_pb2.GetModelInfoRequest(), timeout=_INFO_TIMEOUT_SECONDS)
                for stub in self._all
            ),
            return_exceptions=True,
        )
        found: dict[str, tuple[embedder_service_pb2_grpc.EmbedderServiceStub, int]] = {}
        # In configuration order: the default embedder wins a model two of them serve.
        for stub, reply in zip(self._all, replies, strict=True):
            if isinstance(reply, embedder_service_pb2.GetModelInfoResponse):
                found.setdefault(reply.model, (stub, reply.dimension))
            elif not isinstance(reply, grpc.aio.AioRpcError):
                raise reply
        self._by_model = found

    async def _find(self, model: str) -> tuple[embedder_service_pb2_grpc.EmbedderServiceStub, int]:
        if model not in self._by_model:
            if self._refreshing is None:
                self._refreshing = asyncio.Lock()
            async with self._refreshing:
                missed = self._missing.get(model, float("-inf"))
                if model not in self._by_model and time.monotonic() - missed >= _REFRESH_SECONDS:
                    started = time.monotonic()
                    await self.refresh()
                    if model not in self._by_model:
                        if len(self._missing) >= _MAX_MISSING:
                            self._missing.clear()
                        self._missing[model] = started
        found = self._by_model.get(model)
        if found is None:
            served = ", ".join(sorted(self._by_model)) or "none answering now"
            raise FailedPrecondition(
                f"no embedder of this gateway serves {model} (they serve: {served}); start one and add its "
                "address to MORE_EMBEDDER_ADDRS, or use keyword search",
                reason="EMBEDDING_MODEL_MISMATCH",
            )
        return found

    async def for_model(self, model: str) -> embedder_service_pb2_grpc.EmbedderServiceStub:
        """The stub of an embedder that serves `model`; FAILED_PRECONDITION (EMBEDDING_MODEL_MISMATCH) if none does."""
        return (await self._find(model))[0]

    def check(self, model: str, reply: embedder_service_pb2.EmbedResponse) -> None:
        """FAILED_PRECONDITION (EMBEDDING_MODEL_MISMATCH) unless `reply` holds vectors of `model`: the
        embedder found for it serves another model now (restarted with another), and the next call
        asks every embedder again."""
        if reply.model != model:
            self._by_model = {}
            self._missing.clear()
            raise FailedPrecondition(
                f"the embedder found for {model} now serves {reply.model}, whose vectors cannot be compared "
                f"with {model}'s; try again (the gateway looks for an embedder of {model} anew)",
                reason="EMBEDDING_MODEL_MISMATCH",
            )

    async def dimension(self, model: str) -> int:
        """The number of dimensions of `model`'s vectors, as its embedder reports them."""
        return (await self._find(model))[1]
