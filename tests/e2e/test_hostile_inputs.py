"""What the running stack answers to inputs a hostile client sends, and that its metrics speak one language."""

from __future__ import annotations

import grpc
import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.errors import MAX_MESSAGE_BYTES
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration
# A collection of this module's own in the shared stack, with one document.
COLLECTION = "hostile-test"
PHAROS = DocumentToIngest("pharos.txt", b"The Lighthouse of Alexandria stood on the island of Pharos.")


@pytest.fixture(scope="module")
async def lighthouses(client: RaglineClient) -> None:
    await client.ingest([PHAROS], collection=COLLECTION)


async def test_a_huge_filter_field_is_invalid_argument_with_a_short_message(
    client: RaglineClient, lighthouses: None
) -> None:
    name = "f" * 10_000
    condition = common_pb2.FieldCondition(field=name, operator=common_pb2.FILTER_OPERATOR_EXISTS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.search(
            "lighthouse",
            collection=COLLECTION,
            filter=common_pb2.MetadataFilter(condition=condition),
            cache_policy=gw.CACHE_POLICY_BYPASS,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert "is not a field name" in details and "characters left out" in details
    assert len(details.encode()) <= MAX_MESSAGE_BYTES


async def test_every_service_labels_a_search_mode_with_the_same_word(
    stack: Stack, client: RaglineClient, lighthouses: None
) -> None:
    reply = await client.search(
        "Lighthouse Pharos",
        collection=COLLECTION,
        mode=common_pb2.SEARCH_MODE_KEYWORD,
        cache_policy=gw.CACHE_POLICY_BYPASS,
    )
    assert reply.hits
    assert stack["gateway"].metric("ragline_gateway_retrieval_top_score_count", {"mode": "keyword"}) >= 1
    assert stack["retriever"].metric("ragline_retriever_query_seconds_count", {"mode": "keyword"}) >= 1
