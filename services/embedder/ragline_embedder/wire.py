"""Registers the servicer with a request parser that names the text holding invalid UTF-8.

proto3 strings must be UTF-8, and the generated parser rejects a request that breaks the rule
before any handler runs, so the caller gets a bare INTERNAL "could not deserialize" with no
hint of which text is bad. Here a request that fails to parse reaches the handler as a
`MalformedRequest` naming the first offending string field (`texts[3]`), and the handler
answers INVALID_ARGUMENT with it like any other bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from ragline.errors import InvalidArgument
from ragline.v1 import embedder_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["EmbedderService"]


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request whose bytes did not parse; `field` names the bad string, if one was found."""

    field: str | None

    def error(self) -> InvalidArgument:
        """The error to answer with."""
        if self.field is None:
            return InvalidArgument("the request could not be parsed as a protobuf message")
        return InvalidArgument(f"{self.field} is not valid UTF-8; send text as UTF-8", field=self.field)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise IndexError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def first_invalid_string(data: bytes, descriptor: Descriptor) -> str | None:
    """The path (`texts[3]`, `query`) of the first top-level string field that is not UTF-8, or None."""
    seen: dict[int, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                if field is None or field.type != FieldDescriptor.TYPE_STRING:
                    continue
                index = seen[number] = seen.get(number, -1) + 1
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{field.name}[{index}]" if field.is_repeated else field.name
            else:
                return None
    except IndexError:
        return None
    return None


def _lenient_parser(message_class: type[Message]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(first_invalid_string(data, cast(Descriptor, message_class.DESCRIPTOR)))

    return parse


def add_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """Registers every EmbedderService method of `servicer`, like the generated function but with lenient parsing."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient_parser(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
