"""Client mistakes sent to the real gateway: each is INVALID_ARGUMENT naming the field path, none INTERNAL,
and none reaches PostgreSQL (issue #14: NUL characters, values with no kind set, unknown enum numbers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline.v1 import gateway_service_pb2_grpc as gw_grpc

pytestmark = pytest.mark.integration

KINDLESS = struct_pb2.Struct(fields={"k": struct_pb2.Value()})


@pytest.fixture(scope="module")
async def stub(stack: Stack) -> AsyncIterator[gw_grpc.GatewayServiceStub]:
    async with grpc.aio.insecure_channel(stack["gateway"].address) as channel:
        yield gw_grpc.GatewayServiceStub(channel)


@pytest.fixture(scope="module")
def auth(stack: Stack) -> list[tuple[str, str]]:
    """The metadata carrying the stack's admin key."""
    return [("authorization", f"Bearer {stack.api_key}")]


def unset_filter(operator: int) -> common_pb2.MetadataFilter:
    """A filter whose value arrived with no kind set, as a camelCase typo of a JSON client sends it."""
    cond = common_pb2.FieldCondition(field="year", operator=operator, value=struct_pb2.Value())  # type: ignore[arg-type]
    return common_pb2.MetadataFilter(condition=cond)


def document(**fields: Any) -> common_pb2.DocumentContent:
    return common_pb2.DocumentContent(**{"document_id": "a.txt", "content": b"Some text.", **fields})


CASES = [
    ("Search", gw.SearchRequest(query=gw.Query(text="wings", cache_policy=77)), "query.cache_policy"),  # type: ignore[arg-type]
    ("Search", gw.SearchRequest(query=gw.Query(text="wings", mode=9)), "query.mode"),  # type: ignore[arg-type]
    (
        "Search",
        gw.SearchRequest(query=gw.Query(text="wings", filter=unset_filter(1))),
        "query.filter.condition.value",
    ),
    ("Search", gw.SearchRequest(query=gw.Query(text="wi\x00ngs")), "query.text"),
    ("Search", gw.SearchRequest(query=gw.Query(text="w" * 1_000_000)), "query.text"),
    ("GetDocument", gw.GetDocumentRequest(document_id="a\x00"), "document_id"),
    ("DeleteDocument", gw.DeleteDocumentRequest(collection="x" * 10_000, document_id="a"), "collection"),
    (
        "IngestDocuments",
        gw.IngestDocumentsRequest(documents=[document(metadata=KINDLESS)]),
        "documents[0].metadata.k",
    ),
    (
        "IngestDocuments",
        gw.IngestDocumentsRequest(documents=[document(document_id="\x00")]),
        "documents[0].document_id",
    ),
    (
        "CreateIngestJob",
        gw.CreateIngestJobRequest(documents=[document(metadata=KINDLESS)]),
        "documents[0].metadata.k",
    ),
    ("GetIngestJob", gw.GetIngestJobRequest(job_id="x" * 10_000), "job_id"),
]


@pytest.mark.parametrize(("method", "request_", "field"), CASES)
async def test_a_client_mistake_is_invalid_argument_naming_the_field(
    stub: gw_grpc.GatewayServiceStub, auth: list[tuple[str, str]], method: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(request_, timeout=60, metadata=auth)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    details = raised.value.details() or ""
    assert field in details
    assert len(details) < 500


async def test_an_upload_with_a_nul_document_id_is_invalid_argument(
    stub: gw_grpc.GatewayServiceStub, auth: list[tuple[str, str]]
) -> None:
    messages = [
        gw.UploadIngestDocumentsRequest(document=document()),
        gw.UploadIngestDocumentsRequest(document=document(document_id="b\x00")),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UploadIngestDocuments(iter(messages), timeout=60, metadata=auth)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "document_id" in (raised.value.details() or "")
