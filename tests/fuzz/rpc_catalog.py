"""Every RPC of every ragline.v1 service, where it is served, and one way to call any of them with raw bytes.

The list comes from the generated *_pb2 modules' descriptors and the address from each process's server
reflection, so a new RPC or a service moved to another process is fuzzed without editing the suite.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import ragline.v1
from ragline.channels import MAX_MESSAGE_BYTES

READ_ONLY_VERBS = ("Get", "List", "Search", "Ask", "Lookup", "Embed", "Rerank", "Generate", "Rewrite")
"""RPCs whose name starts with one of these only read: they may be pointed at the seeded collection.
Any other RPC counts as a write and is kept away from it."""

ALLOWED_CODES = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""The codes client input may get; anything else (INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, ...) is a bug.
ALREADY_EXISTS is the right answer to creating a collection that exists, which valid requests do."""

MAX_DETAILS_BYTES = 1024
"""A status message a person can read: longer ones are a bug (and some proxies drop them)."""

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def all_methods() -> list[MethodDescriptor]:
    """Every method of every service declared in a ragline.v1 *_pb2 module, in a stable order."""
    methods = []
    for info in sorted(pkgutil.iter_modules(ragline.v1.__path__), key=lambda m: m.name):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"ragline.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                methods.extend(service.methods)
    return methods


def is_read_only(method: MethodDescriptor) -> bool:
    """Whether the RPC only reads (by its verb): see READ_ONLY_VERBS."""
    return method.name.startswith(READ_ONLY_VERBS)


def served_services(address: str) -> set[str]:
    """Full names of the services a server lists through reflection."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = stub.ServerReflectionInfo(iter([request]), timeout=10)
        return {s.name for reply in replies for s in reply.list_services_response.service}


def method_path(method: MethodDescriptor) -> str:
    """The HTTP/2 path of an RPC, /package.Service/Method."""
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Outcome:
    """How one call ended."""

    code: grpc.StatusCode
    """The status code (OK when it succeeded)."""
    details: str
    """The status message."""

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return bool(self.code == grpc.StatusCode.OK)


def call_raw(
    channel: grpc.Channel, method: MethodDescriptor, requests: list[bytes], timeout: float
) -> Outcome:
    """Sends serialized requests (only the first one unless the RPC streams requests) and reads every reply."""
    path = method_path(method)
    try:
        if method.client_streaming and method.server_streaming:
            for _ in channel.stream_stream(path)(iter(requests), timeout=timeout):
                pass
        elif method.client_streaming:
            channel.stream_unary(path)(iter(requests), timeout=timeout)
        elif method.server_streaming:
            for _ in channel.unary_stream(path)(requests[0], timeout=timeout):
                pass
        else:
            channel.unary_unary(path)(requests[0], timeout=timeout)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


def problems(outcome: Outcome) -> Iterator[str]:
    """What is wrong with how a call with client input ended, if anything."""
    if outcome.code not in ALLOWED_CODES:
        yield f"status {outcome.code.name} ({outcome.details[:300]!r})"
    if len(outcome.details.encode()) >= MAX_DETAILS_BYTES:
        yield f"status message of {len(outcome.details.encode())} bytes ({outcome.details[:200]!r}...)"
