"""Unit tests of the retriever's pure parts: chunk diffing, rank fusion, page tokens, validation, config."""

from __future__ import annotations

import numpy as np
import pytest
from rank_fusion import RRF_K, fuse

from ragline.config import ConfigError, load_config
from ragline.errors import InvalidArgument, NotFound
from ragline.v1 import common_pb2
from ragline.validation import check_collection_name
from ragline_retriever.chunks import NewChunk, StoredChunk, plan_chunks, text_hash
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import describe_server
from ragline_retriever.migrate import migrations
from ragline_retriever.paging import decode_page_token, encode_page_token, listing_scope
from ragline_retriever.search import Hit, create_index_sql, vector_search_sql

VECTOR, KEYWORD = common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_KEYWORD


def _new(ordinal: int, text: str, metadata: dict[str, object] | None = None) -> NewChunk:
    return NewChunk(ordinal, text, text_hash(text), 3, metadata or {}, np.ones(2, dtype=np.float32))


def _stored(ordinal: int, text: str) -> StoredChunk:
    return StoredChunk(ordinal, text_hash(text), 3, {})


def test_plan_keeps_unchanged_chunks() -> None:
    plan = plan_chunks([_stored(0, "a"), _stored(1, "b")], [_new(0, "a"), _new(1, "b")])
    assert (plan.unchanged, plan.insert, plan.update, plan.deleted, plan.changed) == (2, [], [], 0, False)


def test_plan_updates_changed_text_or_metadata_and_inserts_new_positions() -> None:
    plan = plan_chunks([_stored(0, "a"), _stored(1, "b")], [_new(0, "a"), _new(1, "B"), _new(2, "c")])
    assert plan.unchanged == 1
    assert [c.ordinal for c in plan.update] == [1]
    assert [c.ordinal for c in plan.insert] == [2]
    assert plan.changed
    plan = plan_chunks([_stored(0, "a")], [_new(0, "a", {"page": 2})])
    assert [c.ordinal for c in plan.update] == [0]


def test_plan_deletes_vanished_positions() -> None:
    plan = plan_chunks([_stored(0, "a"), _stored(1, "b"), _stored(2, "c")], [_new(0, "a")])
    assert (plan.unchanged, plan.deleted, plan.delete_from) == (1, 2, 1)


def _hit(chunk_id: int, mode: common_pb2.SearchMode) -> Hit:
    return Hit(chunk_id, f"doc-{chunk_id}", 0, "text", {}, 0.5, [mode])


def test_fuse_adds_reciprocal_ranks_and_records_modes() -> None:
    vector = [_hit(1, VECTOR), _hit(2, VECTOR)]
    keyword = [_hit(2, KEYWORD), _hit(3, KEYWORD)]
    fused = fuse([(vector, 1.0), (keyword, 1.0)], top_k=10)
    assert [h.chunk_id for h in fused] == [2, 1, 3]
    assert fused[0].score == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 1))
    assert fused[0].modes == [VECTOR, KEYWORD]
    assert fused[1].modes == [VECTOR]
    assert [h.chunk_id for h in fuse([(vector, 1.0), (keyword, 1.0)], top_k=1)] == [2]


def test_page_tokens_round_trip_and_reject_foreign_tokens() -> None:
    token = encode_page_token("collections", "zeta")
    assert decode_page_token(token, "collections") == "zeta"
    assert decode_page_token("", "collections") == ""
    for bad in ("not base64!", "bm90IGpzb24=", encode_page_token("documents/x", "zeta")):
        with pytest.raises(InvalidArgument) as raised:
            decode_page_token(bad, "collections")
        assert raised.value.field == "page_token"


def test_a_page_token_of_another_tenants_listing_is_not_found() -> None:
    theirs = encode_page_token(listing_scope("ingest-jobs/", "tenant-b"), "2026-01-01 x")
    with pytest.raises(NotFound):
        decode_page_token(theirs, listing_scope("ingest-jobs/", "tenant-a"))
    # Another listing of the other tenant is a token of another listing, like one of the caller's own.
    with pytest.raises(InvalidArgument):
        decode_page_token(theirs, listing_scope("documents/default", "tenant-a"))


@pytest.mark.parametrize("name", ["a", "Docs_2024", "team.wiki-v2", "x" * 63])
def test_valid_collection_names(name: str) -> None:
    assert check_collection_name(name, "name") == name


@pytest.mark.parametrize("name", ["", "-leading", ".hidden", "has space", "x" * 64, "semi;colon", "ünï"])
def test_invalid_collection_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_collection_name(name, "name")


def test_index_and_query_share_expression_and_predicate() -> None:
    index = create_index_sql(7, 384, 16, 64)
    query = vector_search_sql(7, 384)
    assert "(embedding::halfvec(384)) halfvec_cosine_ops" in index
    assert index.endswith("WHERE collection_id = 7")
    assert "(c.embedding::halfvec(384)) <=> $1::halfvec(384)" in query
    assert "WHERE c.collection_id = 7" in query
    assert "<->" not in query


def test_describe_server_hides_credentials() -> None:
    assert describe_server("postgresql://u:secret@db.example:5433/rag") == "db.example:5433/rag"
    assert describe_server("postgresql://postgres:@/postgres?host=/tmp/pg") == "/tmp/pg/postgres"


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ConfigError, match="RETRIEVER_POOL_MIN"):
        load_config(RetrieverConfig, environ={"RETRIEVER_POOL_MIN": "5", "RETRIEVER_POOL_MAX": "2"})
    with pytest.raises(ConfigError, match="RETRIEVER_HNSW_EF_CONSTRUCTION"):
        load_config(
            RetrieverConfig, environ={"RETRIEVER_HNSW_M": "40", "RETRIEVER_HNSW_EF_CONSTRUCTION": "64"}
        )
    assert load_config(RetrieverConfig, environ={}).database_url == ""


def test_migrations_are_numbered_from_one() -> None:
    # Numbers are allocated per branch, so a gap (one not merged yet) is allowed; a duplicate is not.
    versions = [m.version for m in migrations()]
    assert versions[0] == 1
    assert versions == sorted(set(versions))
    assert "CREATE EXTENSION IF NOT EXISTS vector" in migrations()[0].sql
