"""Runs one fuzzed request against the live stack and lists everything wrong with how it was handled.

Writes are kept away from the seeded collection: read-only RPCs get the seeded collection in their valid
templates, every other RPC gets the scratch one. For a write that failed, the scratch collection is
snapshotted before and after, and any difference is a half-write. New tracebacks in any service's log,
a dead process, a disallowed status code or an oversized status message are failures too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st
from proto_strategies import (
    TemplateValues,
    message_class,
    mutated_template,
    random_message,
    raw_request,
    template_request,
)
from rpc_catalog import call_raw, is_read_only, problems
from snapshot import TENANT, snapshot, wait_until_no_pending_documents

from ragline.devstack import Stack

SEEDED = "fuzz-seeded"
"""Collection seeded once and only ever read: its full snapshot must not change during the session."""
SCRATCH = "fuzz-scratch"
"""Collection that writes go to: a failed write must leave it as it was."""
CALL_TIMEOUT = 60.0
"""Deadline of every fuzzed call: a request that hangs longer is a failure."""
QUIET_TIMEOUT = 20.0
"""How long to wait for queued ingest documents to settle before a scratch snapshot."""
LOG_RECORD = re.compile(r"\n\d{4}-\d\d-\d\d \d\d:")
"""Where the next log record starts (each begins with its timestamp)."""
TEXT = "The Eiffel Tower is a wrought-iron lattice tower in Paris."

Request = tuple[str, list[bytes]]
"""A fuzzed call: how it was made (for the report) and the serialized request messages."""


@dataclass
class Fuzzer:
    """The live stack, its channels and the facts valid requests need."""

    stack: Stack
    """The running services."""
    channels: dict[str, grpc.Channel]
    """A channel to each service process, by process name."""
    service_channels: dict[str, grpc.Channel]
    """A channel by full gRPC service name (from reflection)."""
    seeded_before: dict[str, Any]
    """Full snapshot of the seeded collection, taken after seeding."""
    job_id: str
    """A finished ingest job of the scratch collection."""
    dimension: int
    """The embedding dimension."""
    embedding_model: str
    """The embedding model's name."""
    chunk_hashes: list[str]
    """Chunk hashes stored in the seeded collection."""
    content_hash: str
    """A well-formed document content hash."""
    log_offsets: dict[str, int] = field(default_factory=dict)
    """How much of each service log has been checked for tracebacks."""
    inconclusive: int = 0
    """Failed writes whose scratch check was skipped because queued documents never settled."""
    unsettled: bool = False
    """Whether the last wait for queued documents timed out (e.g. a fuzzed claim holds a long lease): then
    the next waits only look once, so that one stuck document does not slow every later example."""

    def template_values(self, read_only: bool) -> TemplateValues:
        """Valid values by field name; `read_only` RPCs get the seeded collection, others the scratch one."""
        collection = SEEDED if read_only else SCRATCH

        def text_or_messages(f: FieldDescriptor) -> Any:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                return None
            return [TEXT] if f.is_repeated else TEXT

        def const(value: Any) -> Callable[[FieldDescriptor], Any]:
            return lambda f: value

        metadata = struct_pb2.Struct()
        metadata.update({"topic": "eiffel", "year": 1889})
        return {
            "collection": const(collection),
            "tenant": const(TENANT),
            "name": const(collection),
            "document_id": const("doc-eiffel"),
            "chunk_id": const(""),
            "content": const(TEXT.encode()),
            "media_type": const("text/plain"),
            "metadata": const(metadata),
            "question": const("Where is the Eiffel Tower?"),
            "query": const("Where is the Eiffel Tower?"),
            "query_text": const("eiffel tower"),
            "text": const(TEXT),
            "texts": const([TEXT]),
            "passages": text_or_messages,
            "score": const(0.5),
            "top_k": const(3),
            "top_n": const(2),
            "candidates": const(5),
            "page_size": const(10),
            "max_tokens": const(8),
            "embedding": const([0.05] * self.dimension),
            "query_embedding": const([0.05] * self.dimension),
            "dimension": const(self.dimension),
            "embedding_model": const(self.embedding_model),
            "distance": const(1),
            "token_count": const(12),
            "content_hash": const(self.content_hash),
            "content_hashes": const(self.chunk_hashes[:3]),
            "job_id": const(self.job_id),
            "reason": const("fuzz"),
            "last": const(True),
            "input_type": const(1),
            "max_documents": const(1),
            "lease_seconds": const(2.0),
            "max_attempts": const(2),
        }

    def requests(self, method: MethodDescriptor) -> st.SearchStrategy[Request]:
        """Random, mutated-template and raw requests for one RPC."""
        template = template_request(method.input_type, self.template_values(is_read_only(method)))
        count = st.integers(1, 3) if method.client_streaming else st.just(1)

        def messages(label: str, one: st.SearchStrategy[Message]) -> st.SearchStrategy[Request]:
            return count.flatmap(
                lambda n: st.tuples(st.just(label), st.lists(one.map(_serialize), min_size=n, max_size=n))
            )

        return st.one_of(
            messages("random", random_message(method.input_type)),
            messages("mutated template", mutated_template(template)),
            raw_request(template).map(lambda raw: ("raw bytes", [raw])),
        )

    def run(self, method: MethodDescriptor, request: Request) -> list[str]:
        """Sends the request; returns what went wrong (empty when the service handled it properly)."""
        retriever, embedder, gateway = (self.channels[n] for n in ("retriever", "embedder", "gateway"))
        checks_scratch = not is_read_only(method)
        if checks_scratch:
            settled = self._settle(gateway)
            before = snapshot(retriever, embedder, SCRATCH, full=False)
        channel = self.service_channels[method.containing_service.full_name]
        outcome = call_raw(channel, method, request[1], CALL_TIMEOUT)
        issues = list(problems(outcome))
        issues.extend(self.new_tracebacks())
        issues.extend(
            f"{name} exited with code {proc.process.returncode}"
            for name, proc in self.stack.processes.items()
            if proc.process is not None and proc.process.poll() is not None
        )
        if checks_scratch and not outcome.ok:
            if settled and self._settle(gateway):
                after = snapshot(retriever, embedder, SCRATCH, full=False)
                if after != before:
                    issues.append(
                        f"{outcome.code.name} but the scratch collection changed: {_diff(before, after)}"
                    )
            else:
                self.inconclusive += 1
        return issues

    def _settle(self, gateway: grpc.Channel) -> bool:
        """Waits for the scratch collection's queued documents; whether none is left."""
        settled = wait_until_no_pending_documents(gateway, SCRATCH, 0.0 if self.unsettled else QUIET_TIMEOUT)
        self.unsettled = not settled
        return settled

    def new_tracebacks(self) -> list[str]:
        """Tracebacks logged by any service since the last call."""
        found = []
        for name, proc in self.stack.processes.items():
            text = proc.log_path.read_text(errors="replace") if proc.log_path.exists() else ""
            fresh = text[self.log_offsets.get(name, 0) :]
            self.log_offsets[name] = len(text)
            if "Traceback" in fresh:
                block = fresh[fresh.index("Traceback") :]
                next_record = LOG_RECORD.search(block)
                block = block[: next_record.start()] if next_record else block
                excerpt = block if len(block) < 1500 else f"{block[:400]}\n[...]\n{block[-1000:]}"
                found.append(f"traceback in the {name} log:\n{excerpt}")
        return found


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def describe(method: MethodDescriptor, request: Request) -> str:
    """A readable form of a fuzzed request, cut to a reasonable length."""
    label, raw = request
    parts = []
    for data in raw:
        try:
            parts.append(repr(message_class(method.input_type).FromString(data))[:600])
        except DecodeError:
            parts.append(repr(data[:300]))
    return f"{label}: " + " | ".join(parts)


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    keys = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
    return "; ".join(f"{k}: {str(before.get(k))[:200]} -> {str(after.get(k))[:200]}" for k in keys)
