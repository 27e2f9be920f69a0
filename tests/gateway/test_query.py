"""The query every Search, Ask and AskStream carries: validated field by field, with the configured defaults."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import struct_pb2

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline_gateway.config import GatewayConfig
from ragline_gateway.query import MAX_ASK_TOP_K, MAX_SEARCH_TOP_K, Query

CONFIG = dataclasses.replace(GatewayConfig(), default_collection="papers", top_k=5, candidates=20)


def test_an_empty_query_gets_the_configured_defaults() -> None:
    query = Query.parse(gw.Query(text="wings"), CONFIG, MAX_SEARCH_TOP_K, "acme")
    assert (query.collection, query.text, query.top_k, query.candidates) == ("papers", "wings", 5, 20)
    # The tenant is the one the handler passes, from the caller's credential.
    assert query.tenant == "acme"
    assert query.filter is None
    assert query.reads_cache and query.writes_cache
    # Chunk hits unless the request asks for documents.
    assert (query.grouping, query.second_chunk_share) == (gw.RESULT_GROUPING_CHUNK, 0.0)


def test_grouping_is_part_of_the_retrieval_key() -> None:
    def key(message: gw.Query) -> str:
        return Query.parse(message, CONFIG, MAX_SEARCH_TOP_K, "acme").retrieval_key("t0", 3)

    chunks = key(gw.Query(text="wings"))
    documents = key(gw.Query(text="wings", grouping=gw.RESULT_GROUPING_DOCUMENT))
    shared = key(gw.Query(text="wings", grouping=gw.RESULT_GROUPING_DOCUMENT, second_chunk_share=0.25))
    assert len({chunks, documents, shared}) == 3
    assert chunks == key(gw.Query(text="wings", grouping=gw.RESULT_GROUPING_CHUNK))


def test_sent_fields_are_kept() -> None:
    only_fr = common_pb2.MetadataFilter(
        condition=common_pb2.FieldCondition(
            field="lang", operator=common_pb2.FILTER_OPERATOR_EQ, value=struct_pb2.Value(string_value="fr")
        )
    )
    message = gw.Query(
        collection="docs",
        text="wings",
        top_k=30,
        mode=common_pb2.SEARCH_MODE_KEYWORD,
        filter=only_fr,
        cache_policy=gw.CACHE_POLICY_REFRESH,
    )
    query = Query.parse(message, CONFIG, MAX_SEARCH_TOP_K, "acme")
    # Candidates never fall below top_k.
    assert (query.collection, query.top_k, query.candidates) == ("docs", 30, 30)
    assert query.filter == only_fr
    assert not query.needs_embedding
    assert not query.reads_cache and query.writes_cache


@pytest.mark.parametrize(
    ("message", "max_top_k", "field"),
    [
        (gw.Query(text=" \n"), MAX_SEARCH_TOP_K, "query.text"),
        (gw.Query(text="wings", top_k=MAX_ASK_TOP_K + 1), MAX_ASK_TOP_K, "query.top_k"),
        (gw.Query(text="wings", top_k=MAX_SEARCH_TOP_K + 1), MAX_SEARCH_TOP_K, "query.top_k"),
        (gw.Query(text="wings", top_k=10, candidates=9), MAX_SEARCH_TOP_K, "query.candidates"),
        (gw.Query(text="wings", candidates=1001), MAX_SEARCH_TOP_K, "query.candidates"),
        (gw.Query(text="w" * (CONFIG.max_query_chars + 1)), MAX_SEARCH_TOP_K, "query.text"),
        (gw.Query(text="wings\x00"), MAX_SEARCH_TOP_K, "query.text"),
        (gw.Query(text="wings", collection="no/such"), MAX_SEARCH_TOP_K, "query.collection"),
        (gw.Query(text="wings", cache_policy=77), MAX_SEARCH_TOP_K, "query.cache_policy"),  # type: ignore[arg-type]
        (gw.Query(text="wings", mode=9), MAX_SEARCH_TOP_K, "query.mode"),  # type: ignore[arg-type]
        (gw.Query(text="wings", grouping=5), MAX_SEARCH_TOP_K, "query.grouping"),  # type: ignore[arg-type]
        (
            gw.Query(text="wings", grouping=gw.RESULT_GROUPING_DOCUMENT, second_chunk_share=1.5),
            MAX_SEARCH_TOP_K,
            "query.second_chunk_share",
        ),
        (
            gw.Query(text="wings", grouping=gw.RESULT_GROUPING_DOCUMENT, second_chunk_share=float("nan")),
            MAX_SEARCH_TOP_K,
            "query.second_chunk_share",
        ),
        # A share ranks documents, so it needs document grouping.
        (gw.Query(text="wings", second_chunk_share=0.2), MAX_SEARCH_TOP_K, "query.second_chunk_share"),
        (
            gw.Query(
                text="wings",
                filter=common_pb2.MetadataFilter(
                    condition=common_pb2.FieldCondition(
                        field="year", operator=common_pb2.FILTER_OPERATOR_EQ, value=struct_pb2.Value()
                    )
                ),
            ),
            MAX_SEARCH_TOP_K,
            "query.filter.condition.value",
        ),
    ],
)
def test_bad_fields_are_invalid_arguments_naming_the_field(
    message: gw.Query, max_top_k: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        Query.parse(message, CONFIG, max_top_k, "acme")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field == field


def test_an_ask_may_not_ask_for_as_many_passages_as_a_search() -> None:
    message = gw.Query(text="wings", top_k=MAX_ASK_TOP_K + 1)
    assert Query.parse(message, CONFIG, MAX_SEARCH_TOP_K, "acme").top_k == MAX_ASK_TOP_K + 1
    with pytest.raises(InvalidArgument):
        Query.parse(message, CONFIG, MAX_ASK_TOP_K, "acme")
