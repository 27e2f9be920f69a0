"""The checks of client input every service shares, and the one definition of each limit they enforce.

A request is checked where it enters a service: the gateway checks what a client sends, the
retriever checks the same shapes again because internal callers reach it directly. Every check
raises INVALID_ARGUMENT naming the field path (`documents[2].metadata.score`) and the limit, and
quotes an offending value only in part, so nothing a client can send ends as INTERNAL (a NUL
that PostgreSQL refuses, a NaN that JSON cannot hold, a `Value` with no kind) or as an error
message as long as the value.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from ragline.errors import InvalidArgument, shorten
from ragline.v1 import common_pb2

# The most of a value (in UTF-8 bytes, quoted) an error message repeats.
MAX_QUOTED_BYTES = 100
# Document ids (a JSON Lines record's id included) and other free-form names.
MAX_ID_CHARS = 1024
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A tenant is a name from a credential (an API key's tenant, a JWT claim), not a document.
MAX_TENANT_CHARS = 128
# A conversation's id: chosen by the caller of Ask, so kept to characters that need no quoting anywhere.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# PostgreSQL's tsvector holds at most 1 MiB; a query text this long stays far below it.
MAX_QUERY_CHARS = 65_536
# Most documents one retriever transaction (BatchUpsertDocuments) stores, and so one synchronous
# IngestDocuments.
MAX_BATCH_DOCUMENTS = 1000
# A document's or chunk's metadata, as JSON text, and how deep its lists and objects nest.
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 16
# Bounds that keep one filter from producing an enormous statement.
MAX_FILTER_CONDITIONS = 64
MAX_FILTER_DEPTH = 8
MAX_FILTER_LIST_VALUES = 1000
MAX_FILTER_FIELD_CHARS = 256
MAX_FILTER_STRING_CHARS = 1024

_FILTER_FIELD = re.compile(r"^[^.\x00]+(\.[^.\x00]+)*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_KINDS = "null_value, number_value, string_value, bool_value, struct_value or list_value"
_COMPARISONS = (
    common_pb2.FILTER_OPERATOR_LT,
    common_pb2.FILTER_OPERATOR_LTE,
    common_pb2.FILTER_OPERATOR_GT,
    common_pb2.FILTER_OPERATOR_GTE,
)


def quote(value: str) -> str:
    """`value` quoted for an error message: its beginning and end when it is over MAX_QUOTED_BYTES."""
    return shorten(repr(value), MAX_QUOTED_BYTES)


def check_text(value: str, field: str, max_chars: int, setting: str = "") -> str:
    """`value` if it has at most `max_chars` characters and no NUL (which PostgreSQL cannot store)."""
    if len(value) > max_chars:
        limit = f" ({setting})" if setting else ""
        raise InvalidArgument(
            f"{field} has {len(value)} characters; the limit is {max_chars}{limit}", field=field
        )
    if "\x00" in value:
        raise InvalidArgument(f"{field} {quote(value)} has a NUL character (\\x00); remove it", field=field)
    return value


def check_collection_name(name: str, field: str) -> str:
    """`name` if it is a valid collection name, else INVALID_ARGUMENT on `field`."""
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(
            f"{field} {quote(name)} is not a valid collection name: use 1 to 63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit",
            field=field,
        )
    return name


def check_tenant(tenant: str, field: str = "tenant") -> str:
    """`tenant` if it names a tenant: not blank, at most MAX_TENANT_CHARS, no NUL.

    Internal requests carry the tenant of the caller's credential; an empty one is a caller's bug
    (it must never mean "every tenant"), so it is refused rather than defaulted.
    """
    if not tenant.strip():
        raise InvalidArgument(
            f"{field} is required: the tenant whose data the call touches, from the caller's credential",
            field=field,
        )
    return check_text(tenant, field, MAX_TENANT_CHARS)


def check_document_id(document_id: str, field: str) -> str:
    """`document_id` if it is not blank, at most MAX_ID_CHARS long and free of NUL characters."""
    if not document_id.strip():
        raise InvalidArgument(f"{field} is empty; give each document an id, e.g. its path", field=field)
    return check_text(document_id, field, MAX_ID_CHARS)


def check_conversation_id(conversation_id: str, field: str) -> str:
    """`conversation_id` if it is 1 to 128 characters A-Z, a-z, 0-9, '.', '_', ':' and '-'."""
    if CONVERSATION_ID.fullmatch(conversation_id) is None:
        raise InvalidArgument(
            f"{field} {quote(conversation_id)} is not a conversation id: 1 to 128 characters A-Z, a-z, 0-9, "
            "'.', '_', ':' and '-' (a UUID, say)",
            field=field,
        )
    return conversation_id


def parse_uuid(value: str, field: str) -> uuid.UUID:
    """`value` as a UUID (a job id, a claim token), or INVALID_ARGUMENT naming `field`."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} {quote(value)} is not a job id (a UUID)", field=field) from None


def check_enum(value: int, enum: EnumTypeWrapper, field: str) -> int:
    """`value` if it is a number of `enum`; a newer client's value this server does not know is INVALID_ARGUMENT."""
    if value not in enum.values():
        raise InvalidArgument(
            f"{field} is {value}, which is not a {enum.DESCRIPTOR.name}; use one of {', '.join(enum.keys())}",
            field=field,
        )
    return value


def _key_path(field: str, key: str) -> str:
    return f"{field}.{key}" if _KEY.match(key) and len(key) <= MAX_QUOTED_BYTES else f"{field}[{quote(key)}]"


def _check_depth(depth: int, limit: int, field: str, what: str) -> None:
    if depth > limit:
        raise InvalidArgument(f"{field} nests {what} deeper than {limit} levels", field=field)


def check_value(value: struct_pb2.Value, field: str, depth: int = 1) -> None:
    """Checks that `value` and everything in it has a kind, finite numbers and no NUL, nesting at most
    MAX_METADATA_DEPTH lists and objects."""
    _check_depth(depth, MAX_METADATA_DEPTH, field, "lists and objects")
    kind = value.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{field} has no kind set; set one of {_KINDS}", field=field)
    if kind == "number_value" and not math.isfinite(value.number_value):
        raise InvalidArgument(
            f"{field} is {value.number_value}, which JSON cannot hold; send a finite number", field=field
        )
    if kind == "string_value" and "\x00" in value.string_value:
        raise InvalidArgument(
            f"{field} {quote(value.string_value)} has a NUL character (\\x00); remove it", field=field
        )
    if kind == "struct_value":
        check_struct(value.struct_value, field, depth + 1)
    if kind == "list_value":
        for i, item in enumerate(value.list_value.values):
            check_value(item, f"{field}[{i}]", depth + 1)


def check_struct(struct: struct_pb2.Struct, field: str, depth: int = 1) -> None:
    """Checks every key (no NUL) and value (as `check_value`) of `struct`."""
    for key, value in struct.fields.items():
        if "\x00" in key:
            raise InvalidArgument(f"{field} has a key {quote(key)} with a NUL character (\\x00)", field=field)
        check_value(value, _key_path(field, key), depth)


def metadata_dict(metadata: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """`metadata` as the JSON object to store, if it is valid and at most MAX_METADATA_BYTES as JSON."""
    check_struct(metadata, field)
    as_dict: dict[str, Any] = json_format.MessageToDict(metadata)
    size = len(json.dumps(as_dict, ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}", field=field
        )
    return as_dict


def check_filter(node: common_pb2.MetadataFilter, where: str = "filter") -> None:
    """Checks a whole filter: its shape, size, operators and values, so that compiling it cannot fail."""
    _check_filter_node(node, where, 1, [0])


def _check_filter_node(node: common_pb2.MetadataFilter, where: str, depth: int, counter: list[int]) -> None:
    _check_depth(depth, MAX_FILTER_DEPTH, where, "filter groups")
    kind = node.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(f"{where} is empty: set condition, all or any", field=where)
    if kind == "condition":
        counter[0] += 1
        if counter[0] > MAX_FILTER_CONDITIONS:
            raise InvalidArgument(
                f"the filter has more than {MAX_FILTER_CONDITIONS} conditions", field="filter"
            )
        _check_condition(node.condition, f"{where}.condition")
        return
    group = node.all if kind == "all" else node.any
    if not group.filters:
        raise InvalidArgument(f"{where}.{kind} has no filters; give at least one", field=f"{where}.{kind}")
    for i, child in enumerate(group.filters):
        _check_filter_node(child, f"{where}.{kind}.filters[{i}]", depth + 1, counter)


def _check_filter_value(value: struct_pb2.Value, field: str) -> None:
    """A filter value: as metadata, with its strings at most MAX_FILTER_STRING_CHARS long."""
    check_value(value, field)
    in_list = value.HasField("list_value")
    for i, item in enumerate(value.list_value.values if in_list else [value]):
        if len(item.string_value) > MAX_FILTER_STRING_CHARS:
            path = f"{field}[{i}]" if in_list else field
            raise InvalidArgument(
                f"{path} has {len(item.string_value)} characters; the limit is {MAX_FILTER_STRING_CHARS}",
                field=path,
            )


def _check_condition(condition: common_pb2.FieldCondition, where: str) -> None:
    name = condition.field
    if not name or len(name) > MAX_FILTER_FIELD_CHARS or not _FILTER_FIELD.match(name):
        raise InvalidArgument(
            f"{where}.field {quote(name)} is not a field name: give 1 to {MAX_FILTER_FIELD_CHARS} characters, "
            "dots separating the names of nested fields",
            field=f"{where}.field",
        )
    operator = condition.operator
    if operator == common_pb2.FILTER_OPERATOR_UNSPECIFIED:
        raise InvalidArgument(f"{where}.operator is not set", field=f"{where}.operator")
    check_enum(operator, common_pb2.FilterOperator, f"{where}.operator")
    value_field = f"{where}.value"
    if condition.HasField("value"):
        _check_filter_value(condition.value, value_field)
    kind = condition.value.WhichOneof("kind") if condition.HasField("value") else None
    if operator == common_pb2.FILTER_OPERATOR_EXISTS:
        if kind not in (None, "bool_value"):
            raise InvalidArgument(f"{value_field} of EXISTS must be a bool or unset", field=value_field)
        return
    if kind is None:
        raise InvalidArgument(f"{value_field} is unset; the operator needs a value", field=value_field)
    listed = kind == "list_value" and 1 <= len(condition.value.list_value.values) <= MAX_FILTER_LIST_VALUES
    if operator in (common_pb2.FILTER_OPERATOR_IN, common_pb2.FILTER_OPERATOR_NOT_IN) and not listed:
        raise InvalidArgument(
            f"{value_field} of IN and NOT_IN must be a list of 1 to {MAX_FILTER_LIST_VALUES} values",
            field=value_field,
        )
    if operator in _COMPARISONS and kind not in ("number_value", "string_value"):
        raise InvalidArgument(
            f"{value_field} of {common_pb2.FilterOperator.Name(operator)} must be a number or a string",
            field=value_field,
        )
