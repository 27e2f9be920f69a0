"""The gateway's handlers take the tenant from the caller's credential only, and hand it to every
retriever and ingest queue request; with no caller bound they refuse to run rather than guess one.

Unit tests: the retriever's two services are one stand-in that records every request and answers
it with an empty reply. Search, Ask and the caches are covered by test_search_latency_pipeline.py,
every RPC through the real services by tests/e2e/test_tenant_confinement.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf.message import Message

from ragline.v1 import (
    conversation_pb2,
    conversation_store_service_pb2,
    ingest_queue_service_pb2,
    retriever_service_pb2,
)
from ragline.v1 import gateway_service_pb2 as gw
from ragline_gateway import principal
from ragline_gateway.config import GatewayConfig
from ragline_gateway.principal import Principal, Role
from ragline_gateway.service import GatewayServicer

JOB_ID = str(uuid.uuid4())


class Recorder:
    """Any RPC of the RetrieverService, IngestQueueService or ConversationStoreService: records the request,
    answers an empty reply."""

    def __init__(self) -> None:
        self.requests: list[Message] = []

    def __getattr__(self, rpc: str) -> Callable[..., Awaitable[Message]]:
        async def call(request: Message, timeout: float) -> Message:
            self.requests.append(request)
            name = type(request).__name__.removesuffix("Request") + "Response"
            for module in (retriever_service_pb2, ingest_queue_service_pb2, conversation_store_service_pb2):
                if hasattr(module, name):
                    reply: Message = getattr(module, name)()
                    return reply
            raise AssertionError(f"no reply type for {rpc}")

        return call


class Context:
    def time_remaining(self) -> float | None:
        return None


CALLS: list[tuple[str, Message]] = [
    ("GetDocument", gw.GetDocumentRequest(collection="docs", document_id="a.txt")),
    ("ListDocuments", gw.ListDocumentsRequest(collection="docs", page_token="t")),
    ("DeleteDocument", gw.DeleteDocumentRequest(collection="docs", document_id="a.txt")),
    ("GetIngestJob", gw.GetIngestJobRequest(job_id=JOB_ID)),
    ("ListIngestJobs", gw.ListIngestJobsRequest(collection="docs")),
    ("CancelIngestJob", gw.CancelIngestJobRequest(job_id=JOB_ID)),
    ("ListConversations", conversation_pb2.ListConversationsRequest(page_size=5)),
    ("GetConversation", conversation_pb2.GetConversationRequest(conversation_id="c-1")),
    ("DeleteConversation", conversation_pb2.DeleteConversationRequest(conversation_id="c-1")),
]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def servicer(recorder: Recorder) -> GatewayServicer:
    deps: Any = type(
        "Deps", (), {"retriever": recorder, "ingest_queue": recorder, "conversations": recorder}
    )()
    return GatewayServicer(GatewayConfig(), deps)


@pytest.mark.parametrize(("method", "request_"), CALLS, ids=[name for name, _ in CALLS])
async def test_a_handler_sends_the_bound_callers_tenant_downstream(
    servicer: GatewayServicer, recorder: Recorder, method: str, request_: Message
) -> None:
    token = principal.bind(Principal("acme", Role.ADMIN, "key-1"))
    try:
        await getattr(servicer, method)(request_, Context())
    finally:
        principal.unbind(token)
    assert [getattr(r, "tenant", None) for r in recorder.requests] == ["acme"]


@pytest.mark.parametrize(("method", "request_"), CALLS, ids=[name for name, _ in CALLS])
async def test_a_handler_with_no_caller_bound_calls_nothing(
    servicer: GatewayServicer, recorder: Recorder, method: str, request_: Message
) -> None:
    with pytest.raises(LookupError):
        await getattr(servicer, method)(request_, Context())
    assert recorder.requests == []
