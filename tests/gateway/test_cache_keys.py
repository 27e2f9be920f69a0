"""Cache keys hold everything that changes a result, the caller's tenant included, so no request is
ever served another's answer, and no tenant another tenant's."""

from __future__ import annotations

import dataclasses

from google.protobuf import struct_pb2

from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline_gateway.query import Query, embedding_key

BASE = Query(
    "acme",
    "docs",
    "Where is the tower?",
    5,
    20,
    common_pb2.SEARCH_MODE_HYBRID,
    gw.CACHE_POLICY_UNSPECIFIED,
    None,
)
OPTIONS = common_pb2.GenerationOptions(max_tokens=64, temperature=0.0)
FILTER = common_pb2.MetadataFilter(
    condition=common_pb2.FieldCondition(
        field="lang", operator=common_pb2.FILTER_OPERATOR_EQ, value=struct_pb2.Value(string_value="fr")
    )
)
VARIANTS = {
    "tenant": dataclasses.replace(BASE, tenant="globex"),
    "collection": dataclasses.replace(BASE, collection="other"),
    "text": dataclasses.replace(BASE, text="Where is the bridge?"),
    "top_k": dataclasses.replace(BASE, top_k=6),
    "candidates": dataclasses.replace(BASE, candidates=40),
    "mode": dataclasses.replace(BASE, mode=common_pb2.SEARCH_MODE_VECTOR),
    "filter": dataclasses.replace(BASE, filter=FILTER),
}


# Creation times of two collections of the same name: one deleted, then one created again.
CREATED, AGAIN = "2026-11-24T10:00:00Z", "2026-11-24T10:05:00Z"


def test_every_search_parameter_and_the_content_version_change_the_retrieval_key() -> None:
    keys = {name: query.retrieval_key(CREATED, 7) for name, query in VARIANTS.items()}
    keys["base"] = BASE.retrieval_key(CREATED, 7)
    keys["generation"] = BASE.retrieval_key(CREATED, 8)
    keys["created again"] = BASE.retrieval_key(AGAIN, 7)
    assert len(set(keys.values())) == len(keys)


def test_generation_settings_change_the_answer_key_and_the_semantic_scope() -> None:
    other = common_pb2.GenerationOptions(max_tokens=65, temperature=0.0)
    warmer = common_pb2.GenerationOptions(max_tokens=64, temperature=0.7)
    answers = {BASE.answer_key(CREATED, 7, o) for o in (OPTIONS, other, warmer)}
    answers |= {BASE.answer_key(CREATED, 8, OPTIONS), BASE.answer_key(AGAIN, 7, OPTIONS)}
    assert len(answers) == 5
    scopes = {BASE.semantic_scope(CREATED, 7, o) for o in (OPTIONS, other, warmer)}
    scopes |= {BASE.semantic_scope(CREATED, 8, OPTIONS), BASE.semantic_scope(AGAIN, 7, OPTIONS)}
    assert len(scopes) == 5
    assert len({q.answer_key(CREATED, 7, OPTIONS) for q in VARIANTS.values()}) == len(VARIANTS)


def test_the_semantic_scope_ignores_the_wording_only() -> None:
    assert VARIANTS["text"].semantic_scope(CREATED, 7, OPTIONS) == BASE.semantic_scope(CREATED, 7, OPTIONS)
    for name in ("tenant", "collection", "top_k", "candidates", "mode", "filter"):
        assert VARIANTS[name].semantic_scope(CREATED, 7, OPTIONS) != BASE.semantic_scope(CREATED, 7, OPTIONS)


def test_keys_are_stable_across_equal_filters_built_separately() -> None:
    rebuilt = common_pb2.MetadataFilter()
    rebuilt.CopyFrom(FILTER)
    assert VARIANTS["filter"].retrieval_key(CREATED, 1) == dataclasses.replace(
        BASE, filter=rebuilt
    ).retrieval_key(CREATED, 1)


def test_every_key_of_one_request_differs_by_tenant_alone() -> None:
    # Same collection name, same question, same settings, same generation: only the tenant differs.
    other = VARIANTS["tenant"]
    assert BASE.retrieval_key(CREATED, 7) != other.retrieval_key(CREATED, 7)
    assert BASE.answer_key(CREATED, 7, OPTIONS) != other.answer_key(CREATED, 7, OPTIONS)
    assert BASE.semantic_scope(CREATED, 7, OPTIONS) != other.semantic_scope(CREATED, 7, OPTIONS)
    assert embedding_key("acme", "model", 384, BASE.text) != embedding_key("globex", "model", 384, BASE.text)


def test_a_tenant_name_cannot_be_shifted_into_the_collection_name() -> None:
    # The parts are serialised as a list, never concatenated: "a" + "b-docs" is not "a-b" + "docs".
    left = dataclasses.replace(BASE, tenant="a", collection="b-docs")
    right = dataclasses.replace(BASE, tenant="a-b", collection="docs")
    assert left.retrieval_key(CREATED, 1) != right.retrieval_key(CREATED, 1)
    assert left.semantic_scope(CREATED, 1, OPTIONS) != right.semantic_scope(CREATED, 1, OPTIONS)
