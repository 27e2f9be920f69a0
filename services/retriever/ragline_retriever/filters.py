"""Compiles a `MetadataFilter` into a parameterised SQL condition over a chunk's JSON metadata.

Filters come from callers, so the SQL text is built only from fixed fragments and `$n`
placeholders: every field path and value travels as a query parameter and is never spliced
into the statement. A filter that cannot be compiled is INVALID_ARGUMENT naming the part to fix
(`filter.all.filters[2].condition.value`), and the check happens before anything runs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2

# Bounds that keep one request from producing an enormous statement.
MAX_CONDITIONS = 64
MAX_DEPTH = 8
MAX_LIST_VALUES = 1000
MAX_FIELD_LENGTH = 256
_FIELD = re.compile(r"^[^.\x00]+(\.[^.\x00]+)*$")

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
    counter = [0]
    return _compile(metadata_filter, metadata_sql, params, "filter", 1, counter)


def _compile(
    node: common_pb2.MetadataFilter,
    metadata_sql: str,
    params: Params,
    where: str,
    depth: int,
    counter: list[int],
) -> str:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"{where} nests filter groups deeper than {MAX_DEPTH} levels", field=where)
    kind = node.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where} is empty: set condition, all or any", field=where)
    if kind == "condition":
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise InvalidArgument(f"the filter has more than {MAX_CONDITIONS} conditions", field="filter")
        return _condition(node.condition, metadata_sql, params, f"{where}.condition")
    group = node.all if kind == "all" else node.any
    if not group.filters:
        raise InvalidArgument(f"{where}.{kind} has no filters; give at least one", field=f"{where}.{kind}")
    parts = [
        _compile(child, metadata_sql, params, f"{where}.{kind}.filters[{i}]", depth + 1, counter)
        for i, child in enumerate(group.filters)
    ]
    return "(" + (" AND " if kind == "all" else " OR ").join(parts) + ")"


def _json_param(params: Params, value: Any) -> str:
    # Sent as JSON text: a jsonb parameter of None would be SQL NULL rather than JSON null.
    return f"{params.add(json.dumps(value))}::text::jsonb"


def _condition(condition: common_pb2.FieldCondition, metadata_sql: str, params: Params, where: str) -> str:
    name = condition.field
    if not name or len(name) > MAX_FIELD_LENGTH or not _FIELD.match(name):
        raise InvalidArgument(
            f"{where}.field {name!r} is not a field name: give 1 to {MAX_FIELD_LENGTH} characters, "
            "dots separating the names of nested fields",
            field=f"{where}.field",
        )
    field = f"({metadata_sql} #> {params.add(name.split('.'))}::text[])"
    operator = condition.operator
    has_value = condition.HasField("value")
    value: Any = json_format.MessageToDict(condition.value) if has_value else None
    value_field = f"{where}.value"
    if operator == common_pb2.FILTER_OPERATOR_EXISTS:
        if has_value and not isinstance(value, bool):
            raise InvalidArgument(f"{value_field} of EXISTS must be a bool or unset", field=value_field)
        return f"({field} IS {'NULL' if value is False else 'NOT NULL'})"
    if not has_value:
        raise InvalidArgument(f"{value_field} is unset; the operator needs a value", field=value_field)
    if operator in (common_pb2.FILTER_OPERATOR_EQ, common_pb2.FILTER_OPERATOR_NE):
        placeholder = _json_param(params, value)
        if operator == common_pb2.FILTER_OPERATOR_EQ:
            return f"({field} = {placeholder})"
        return f"({field} IS DISTINCT FROM {placeholder})"
    if operator in (common_pb2.FILTER_OPERATOR_IN, common_pb2.FILTER_OPERATOR_NOT_IN):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
            raise InvalidArgument(
                f"{value_field} of IN and NOT_IN must be a list of 1 to {MAX_LIST_VALUES} values",
                field=value_field,
            )
        member = f"EXISTS (SELECT 1 FROM jsonb_array_elements({_json_param(params, value)}) AS v(x) WHERE v.x = {field})"
        return f"({member})" if operator == common_pb2.FILTER_OPERATOR_IN else f"(NOT {member})"
    if operator in _COMPARISONS:
        sign = _COMPARISONS[operator]
        # CASE, unlike AND, guarantees the cast is only tried on values of the right JSON type.
        if isinstance(value, bool) or not isinstance(value, float | int | str):
            raise InvalidArgument(
                f"{value_field} of {common_pb2.FilterOperator.Name(operator)} must be a number or a string",
                field=value_field,
            )
        if isinstance(value, str):
            return (
                f"(CASE WHEN jsonb_typeof({field}) = 'string' "
                f"THEN ({field} #>> '{{}}') COLLATE \"C\" {sign} {params.add(value)}::text ELSE false END)"
            )
        return (
            f"(CASE WHEN jsonb_typeof({field}) = 'number' "
            f"THEN {field}::float8 {sign} {params.add(float(value))}::float8 ELSE false END)"
        )
    raise InvalidArgument(f"{where}.operator is not set or unknown ({operator})", field=f"{where}.operator")
