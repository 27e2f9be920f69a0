"""Compiles a `MetadataFilter` into a parameterised SQL condition over a chunk's JSON metadata.

Filters come from callers, so the SQL text is built only from fixed fragments and `$n`
placeholders: every field path and value travels as a query parameter and is never spliced
into the statement. The filter was checked whole before (`ragline.validation.check_filter`, called by
`validate_search`), so compiling it cannot fail.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from ragline.v1 import common_pb2

_COMPARISONS = {
    common_pb2.FILTER_OPERATOR_LT: "<",
    common_pb2.FILTER_OPERATOR_LTE: "<=",
    common_pb2.FILTER_OPERATOR_GT: ">",
    common_pb2.FILTER_OPERATOR_GTE: ">=",
}


class Params:
    """The values of a statement's `$n` placeholders, numbered after the statement's own."""

    def __init__(self, first: int) -> None:
        self._first = first
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        """A placeholder for `value`."""
        self.values.append(value)
        return f"${self._first + len(self.values) - 1}"


def compile_filter(metadata_filter: common_pb2.MetadataFilter, metadata_sql: str, params: Params) -> str:
    """A boolean SQL expression over the jsonb expression `metadata_sql`; values are added to `params`."""
    kind = metadata_filter.WhichOneof("kind")
    if kind == "condition":
        return _condition(metadata_filter.condition, metadata_sql, params)
    group = metadata_filter.all if kind == "all" else metadata_filter.any
    parts = [compile_filter(child, metadata_sql, params) for child in group.filters]
    return "(" + (" AND " if kind == "all" else " OR ").join(parts) + ")"


def _json_param(params: Params, value: Any) -> str:
    # Sent as JSON text: a jsonb parameter of None would be SQL NULL rather than JSON null.
    return f"{params.add(json.dumps(value))}::text::jsonb"


def _condition(condition: common_pb2.FieldCondition, metadata_sql: str, params: Params) -> str:
    field = f"({metadata_sql} #> {params.add(condition.field.split('.'))}::text[])"
    operator = condition.operator
    value: Any = json_format.MessageToDict(condition.value) if condition.HasField("value") else None
    if operator == common_pb2.FILTER_OPERATOR_EXISTS:
        return f"({field} IS {'NULL' if value is False else 'NOT NULL'})"
    if operator == common_pb2.FILTER_OPERATOR_EQ:
        return f"({field} = {_json_param(params, value)})"
    if operator == common_pb2.FILTER_OPERATOR_NE:
        return f"({field} IS DISTINCT FROM {_json_param(params, value)})"
    if operator in (common_pb2.FILTER_OPERATOR_IN, common_pb2.FILTER_OPERATOR_NOT_IN):
        member = f"EXISTS (SELECT 1 FROM jsonb_array_elements({_json_param(params, value)}) AS v(x) WHERE v.x = {field})"
        return f"({member})" if operator == common_pb2.FILTER_OPERATOR_IN else f"(NOT {member})"
    sign = _COMPARISONS[operator]
    # CASE, unlike AND, guarantees the cast is only tried on values of the right JSON type.
    if isinstance(value, str):
        return (
            f"(CASE WHEN jsonb_typeof({field}) = 'string' "
            f"THEN ({field} #>> '{{}}') COLLATE \"C\" {sign} {params.add(value)}::text ELSE false END)"
        )
    return (
        f"(CASE WHEN jsonb_typeof({field}) = 'number' "
        f"THEN {field}::float8 {sign} {params.add(float(value))}::float8 ELSE false END)"
    )
