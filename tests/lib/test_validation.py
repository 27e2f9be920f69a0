"""The shared request checks: every value a client can send that the services cannot store or compare
is INVALID_ARGUMENT naming its field path, with a message that quotes at most a part of the value."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2
from ragline.validation import (
    MAX_FILTER_CONDITIONS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_QUOTED_BYTES,
    check_collection_name,
    check_document_id,
    check_enum,
    check_filter,
    metadata_dict,
    parse_uuid,
    quote,
)


def metadata(**fields: struct_pb2.Value) -> struct_pb2.Struct:
    return struct_pb2.Struct(fields=fields)


def number(value: float) -> struct_pb2.Value:
    return struct_pb2.Value(number_value=value)


def listed(*values: struct_pb2.Value) -> struct_pb2.Value:
    return struct_pb2.Value(list_value=struct_pb2.ListValue(values=values))


def nested(depth: int) -> struct_pb2.Value:
    value = number(1)
    for _ in range(depth - 1):
        value = listed(value)
    return value


def invalid(check: object, *args: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        check(*args)  # type: ignore[operator]
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value


def test_a_long_value_is_quoted_in_part() -> None:
    quoted = quote("x" * 10_000)
    assert len(quoted.encode()) <= MAX_QUOTED_BYTES
    assert "characters left out" in quoted
    assert quote("short") == "'short'"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (metadata(score=struct_pb2.Value()), "m.score"),
        (metadata(tags=listed(number(1), struct_pb2.Value())), "m.tags[1]"),
        (metadata(score=number(float("nan"))), "m.score"),
        (metadata(score=number(float("inf"))), "m.score"),
        (metadata(score=listed(number(float("-inf")))), "m.score[0]"),
        (metadata(note=struct_pb2.Value(string_value="a\x00b")), "m.note"),
        (metadata(**{"a\x00": number(1)}), "m"),
        (metadata(deep=nested(MAX_METADATA_DEPTH + 1)), "m.deep" + "[0]" * MAX_METADATA_DEPTH),
        (metadata(big=struct_pb2.Value(string_value="x" * MAX_METADATA_BYTES)), "m"),
    ],
)
def test_metadata_a_service_cannot_store_is_invalid(value: struct_pb2.Struct, field: str) -> None:
    assert invalid(metadata_dict, value, "m").field == field


def test_valid_metadata_becomes_its_json_object() -> None:
    value = metadata(
        year=number(2024),
        tags=listed(struct_pb2.Value(string_value="a")),
        none=struct_pb2.Value(null_value=0),
    )
    value.fields["deep"].CopyFrom(nested(MAX_METADATA_DEPTH))
    assert metadata_dict(value, "m")["year"] == 2024


def condition(operator: int, value: struct_pb2.Value | None = None) -> common_pb2.MetadataFilter:
    cond = common_pb2.FieldCondition(field="year", operator=operator)  # type: ignore[arg-type]
    if value is not None:
        cond.value.CopyFrom(value)
    return common_pb2.MetadataFilter(condition=cond)


@pytest.mark.parametrize(
    ("metadata_filter", "field", "message"),
    [
        (condition(common_pb2.FILTER_OPERATOR_EQ, struct_pb2.Value()), "f.condition.value", "no kind set"),
        (condition(common_pb2.FILTER_OPERATOR_NE, struct_pb2.Value()), "f.condition.value", "no kind set"),
        (condition(common_pb2.FILTER_OPERATOR_EQ, number(float("nan"))), "f.condition.value", "finite"),
        (
            condition(common_pb2.FILTER_OPERATOR_IN, listed(number(1), struct_pb2.Value())),
            "f.condition.value[1]",
            "no kind set",
        ),
        (
            condition(common_pb2.FILTER_OPERATOR_EQ, struct_pb2.Value(string_value="x\x00")),
            "f.condition.value",
            "NUL",
        ),
        (
            condition(common_pb2.FILTER_OPERATOR_EQ, struct_pb2.Value(string_value="x" * 5000)),
            "f.condition.value",
            "the limit is",
        ),
        (condition(77, number(1)), "f.condition.operator", "not a FilterOperator"),
        (
            common_pb2.MetadataFilter(
                all=common_pb2.FilterGroup(
                    filters=[condition(common_pb2.FILTER_OPERATOR_EXISTS)] * (MAX_FILTER_CONDITIONS + 1)
                )
            ),
            "filter",
            "conditions",
        ),
    ],
)
def test_filters_the_retriever_cannot_compile_are_invalid(
    metadata_filter: common_pb2.MetadataFilter, field: str, message: str
) -> None:
    error = invalid(check_filter, metadata_filter, "f")
    assert error.field == field
    assert message in error.message


def test_an_explicit_null_stays_a_valid_filter_value() -> None:
    check_filter(condition(common_pb2.FILTER_OPERATOR_EQ, struct_pb2.Value(null_value=0)))


def test_unknown_enum_numbers_are_invalid() -> None:
    error = invalid(check_enum, 77, common_pb2.SearchMode, "query.mode")
    assert error.field == "query.mode"
    assert "SEARCH_MODE_HYBRID" in error.message
    assert (
        check_enum(common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SearchMode, "mode")
        == common_pb2.SEARCH_MODE_KEYWORD
    )


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_document_id, "a\x00b"),
        (check_document_id, "x" * 10_000),
        (check_collection_name, "x" * 10_000),
        (parse_uuid, "x" * 10_000),
    ],
)
def test_names_and_ids_are_checked_and_quoted_in_part(check: object, value: str) -> None:
    error = invalid(check, value, "field")
    assert error.field == "field"
    assert len(error.message) < 400
