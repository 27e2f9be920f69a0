"""The AdminService's collection methods forward the caller's tenant, fill in the embedder's model,
and answer a client's mistakes with INVALID_ARGUMENT before calling anyone.

Unit tests: the embedder and retriever are stand-ins that record what they are asked; the
retriever's own confinement (another tenant's collection is NOT_FOUND) is tested end to end in
tests/e2e/test_tenant_confinement.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ragline.errors import InvalidArgument
from ragline.v1 import admin_service_pb2 as admin
from ragline.v1 import common_pb2, embedder_service_pb2, retriever_service_pb2
from ragline_gateway.admin_collections import AdminCollections
from ragline_gateway.config import GatewayConfig

MODEL, DIMENSION = "all-MiniLM-L6-v2", 384


class Recorder:
    """The embedder's GetModelInfo and the retriever's *StoredCollection RPCs, recording each request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def GetModelInfo(self, request: Any, timeout: float) -> embedder_service_pb2.GetModelInfoResponse:
        return embedder_service_pb2.GetModelInfoResponse(model=MODEL, dimension=DIMENSION)

    async def CreateStoredCollection(
        self, request: retriever_service_pb2.CreateStoredCollectionRequest, timeout: float
    ) -> retriever_service_pb2.CreateStoredCollectionResponse:
        self.requests.append(request)
        collection = common_pb2.Collection(
            name=request.name, embedding_model=request.embedding_model, dimension=request.dimension
        )
        return retriever_service_pb2.CreateStoredCollectionResponse(collection=collection)

    async def GetStoredCollection(
        self, request: retriever_service_pb2.GetStoredCollectionRequest, timeout: float
    ) -> retriever_service_pb2.GetStoredCollectionResponse:
        self.requests.append(request)
        collection = common_pb2.Collection(name=request.name, document_count=3)
        return retriever_service_pb2.GetStoredCollectionResponse(collection=collection)

    async def ListStoredCollections(
        self, request: retriever_service_pb2.ListStoredCollectionsRequest, timeout: float
    ) -> retriever_service_pb2.ListStoredCollectionsResponse:
        self.requests.append(request)
        return retriever_service_pb2.ListStoredCollectionsResponse(
            collections=[common_pb2.Collection(name="default")], next_page_token="next"
        )

    async def DeleteStoredCollection(
        self, request: retriever_service_pb2.DeleteStoredCollectionRequest, timeout: float
    ) -> retriever_service_pb2.DeleteStoredCollectionResponse:
        self.requests.append(request)
        return retriever_service_pb2.DeleteStoredCollectionResponse(deleted_documents=2)


class Context:
    def time_remaining(self) -> float | None:
        return None


CONTEXT: Any = Context()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def collections(recorder: Recorder) -> AdminCollections:
    deps: Any = SimpleNamespace(embedder=recorder, retriever=recorder)
    return AdminCollections(GatewayConfig(), deps)


async def test_every_method_asks_the_retriever_for_the_callers_tenant_only(
    collections: AdminCollections, recorder: Recorder
) -> None:
    created = await collections.create("acme", admin.CreateCollectionRequest(name="papers"), CONTEXT)
    got = await collections.get("acme", admin.GetCollectionRequest(name="papers"), CONTEXT)
    listed = await collections.list("acme", admin.ListCollectionsRequest(page_token="t"), CONTEXT)
    deleted = await collections.delete("acme", admin.DeleteCollectionRequest(name="papers"), CONTEXT)
    assert [r.tenant for r in recorder.requests] == ["acme"] * 4
    assert created.collection.name == "papers" and got.collection.document_count == 3
    # GetCollection counts the documents; a query's lookup (the basic view) does not.
    assert recorder.requests[1].view == retriever_service_pb2.COLLECTION_VIEW_FULL
    assert [c.name for c in listed.collections] == ["default"] and listed.next_page_token == "next"
    assert recorder.requests[2].page_token == "t"
    assert deleted.deleted_documents == 2


@pytest.mark.parametrize("model", ["", MODEL])
async def test_a_collection_is_made_for_the_embedders_model_and_dimension(
    collections: AdminCollections, recorder: Recorder, model: str
) -> None:
    request = admin.CreateCollectionRequest(name="papers", embedding_model=model)
    reply = await collections.create("acme", request, CONTEXT)
    assert (reply.collection.embedding_model, reply.collection.dimension) == (MODEL, DIMENSION)
    assert (recorder.requests[0].embedding_model, recorder.requests[0].dimension) == (MODEL, DIMENSION)


async def test_another_model_than_the_embedders_is_refused_naming_the_one_it_serves(
    collections: AdminCollections, recorder: Recorder
) -> None:
    request = admin.CreateCollectionRequest(name="papers", embedding_model="text-embedding-3-small")
    with pytest.raises(InvalidArgument) as refused:
        await collections.create("acme", request, CONTEXT)
    assert refused.value.field == "embedding_model" and MODEL in refused.value.message
    assert recorder.requests == []


@pytest.mark.parametrize(("requested", "sent"), [(0, 100), (7, 7), (1000, 1000), (5000, 1000)])
async def test_page_sizes_default_to_100_and_are_capped_at_1000(
    collections: AdminCollections, recorder: Recorder, requested: int, sent: int
) -> None:
    await collections.list("acme", admin.ListCollectionsRequest(page_size=requested), CONTEXT)
    assert recorder.requests[0].page_size == sent


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("create", admin.CreateCollectionRequest(name=""), "name"),
        ("create", admin.CreateCollectionRequest(name="no/such"), "name"),
        ("create", admin.CreateCollectionRequest(name="ok", embedding_model="m" * 2000), "embedding_model"),
        ("get", admin.GetCollectionRequest(name="-dash-first"), "name"),
        ("delete", admin.DeleteCollectionRequest(name="x" * 64), "name"),
        ("list", admin.ListCollectionsRequest(page_size=-1), "page_size"),
    ],
)
async def test_a_bad_request_is_refused_before_any_call(
    collections: AdminCollections, recorder: Recorder, call: str, request_: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await getattr(collections, call)("acme", request_, CONTEXT)
    assert refused.value.field == field
    assert recorder.requests == []
