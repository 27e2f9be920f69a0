"""One running stack for the fuzz suite, its seeded and scratch collections, and the Hypothesis profiles.

`HYPOTHESIS_PROFILE=ci` (the default, used by `make test`) runs a few examples per RPC and keeps the suite
within about two minutes; `HYPOTHESIS_PROFILE=fuzz` (`make fuzz`) runs hundreds per RPC and shrinks failures.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fuzz_harness import SCRATCH, SEEDED, Fuzzer
from hypothesis import HealthCheck, Phase, settings
from rpc_catalog import CHANNEL_OPTIONS, served_services
from snapshot import snapshot, wait_until_no_pending_documents

from ragline.devstack import Stack
from ragline.v1 import common_pb2, embedder_service_pb2, gateway_service_pb2
from ragline.v1.embedder_service_pb2_grpc import EmbedderServiceStub
from ragline.v1.gateway_service_pb2_grpc import GatewayServiceStub

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
# Every call goes to live services: no per-example deadline (calls have their own), no replay database.
settings.register_profile(
    "ci",
    max_examples=8,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DOCUMENTS = {
    "doc-eiffel": (
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, built for the 1889 World's Fair.",
        1889,
    ),
    "doc-bananas": ("Ripe bananas are usually yellow, and they are rich in potassium.", 2001),
    "doc-water": (
        "At sea level, pure water boils at 100 degrees Celsius and freezes at 0 degrees Celsius.",
        1742,
    ),
}
"""The documents of both collections: id -> (text, a number for the `year` metadata field)."""


def _documents() -> list[common_pb2.DocumentContent]:
    docs = []
    for doc_id, (text, year) in DOCUMENTS.items():
        doc = common_pb2.DocumentContent(document_id=doc_id, content=text.encode(), media_type="text/plain")
        doc.metadata.update({"topic": doc_id.removeprefix("doc-"), "year": year, "tags": ["fuzz", "seed"]})
        docs.append(doc)
    return docs


STACK_ENV = {
    # Empty REDIS_URL and DATABASE_URL select the embedded servers, whatever the machine's environment says.
    "REDIS_URL": "",
    "DATABASE_URL": "",
    "LOG_LEVEL": "INFO",
    # Short answers and quick ingest retries keep each example fast; limits stay enforced.
    "GENERATOR_DEFAULT_MAX_TOKENS": "8",
    "GENERATOR_MAX_TOKENS_LIMIT": "32",
    "GATEWAY_INGEST_LEASE_SECONDS": "5",
    "GATEWAY_INGEST_RETRY_SECONDS": "0.2",
    "GATEWAY_INGEST_POLL_SECONDS": "0.2",
    "GATEWAY_INGEST_MAX_ATTEMPTS": "2",
}
"""Settings of the fuzzed stack."""


@pytest.fixture(scope="session")
def fuzz_stack() -> Iterator[Stack]:
    # A folder of its own rather than pytest's tmp_path: pytest deletes old numbered temp folders, so another
    # pytest run on the machine could delete the database from under the running stack.
    with tempfile.TemporaryDirectory(prefix="ragline-fuzz-") as state:
        stack = Stack(state=Path(state), free_ports=True, env=STACK_ENV)
        stack.start()
        yield stack
        stack.stop()


class Authorization(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the stack's admin key to every call, so the fuzzed requests reach the gateway's handlers."""

    def __init__(self, token: str) -> None:
        self.entry = ("authorization", f"Bearer {token}")

    def _authorized(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.entry])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._authorized(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._authorized(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._authorized(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._authorized(details), requests)


@pytest.fixture(scope="session")
def fuzzer(fuzz_stack: Stack) -> Iterator[Fuzzer]:
    """The stack with both collections seeded, channels to every service, and valid values for templates."""
    channels = {
        name: grpc.insecure_channel(proc.address, options=CHANNEL_OPTIONS)
        for name, proc in fuzz_stack.processes.items()
    }
    # The gateway's calls carry the admin key; health and reflection need none, so it is harmless on them.
    channels["gateway"] = grpc.intercept_channel(channels["gateway"], Authorization(fuzz_stack.api_key))
    gateway = GatewayServiceStub(channels["gateway"])
    for collection in (SEEDED, SCRATCH):
        gateway.IngestDocuments(
            gateway_service_pb2.IngestDocumentsRequest(collection=collection, documents=_documents()),
            timeout=120,
        )
    job_doc = common_pb2.DocumentContent(
        document_id="doc-job", content=b"A queued document.", media_type="text/plain"
    )
    job = gateway.CreateIngestJob(
        gateway_service_pb2.CreateIngestJobRequest(collection=SCRATCH, documents=[job_doc]), timeout=60
    ).job
    assert wait_until_no_pending_documents(channels["gateway"], SCRATCH, timeout=120)
    info = EmbedderServiceStub(channels["embedder"]).GetModelInfo(
        embedder_service_pb2.GetModelInfoRequest(), timeout=30
    )
    seeded = snapshot(channels["retriever"], channels["embedder"], SEEDED, full=True)
    assert len(seeded["documents"]) == len(DOCUMENTS), seeded
    hashes = [h for doc_hashes in seeded["chunk_hashes"].values() for h in doc_hashes]
    service_channels = {
        service: channels[name]
        for name, proc in fuzz_stack.processes.items()
        for service in served_services(proc.address)
    }
    fuzzer = Fuzzer(
        stack=fuzz_stack,
        channels=channels,
        service_channels=service_channels,
        seeded_before=seeded,
        job_id=job.job_id,
        dimension=info.dimension,
        embedding_model=info.model,
        chunk_hashes=hashes,
        content_hash=hashlib.sha256(b"fuzz").hexdigest(),
    )
    yield fuzzer
    if fuzzer.inconclusive:
        warnings.warn(
            f"{fuzzer.inconclusive} rejected writes were not checked for changes to {SCRATCH}:"
            " its queued ingest documents never settled",
            stacklevel=1,
        )
    for channel in channels.values():
        channel.close()
