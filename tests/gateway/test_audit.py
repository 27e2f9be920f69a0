"""The audit log: one JSON line per writer or admin call, with who, what, on what, and how it ended."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from policy_server import caller, start_server

from ragline.config import load_config
from ragline.v1 import common_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from ragline_gateway.audit import AuditInterceptor
from ragline_gateway.config import GatewayConfig
from ragline_gateway.rate_limits import LimitsInterceptor


class NoRedis:
    """Dependencies before Redis is connected: the limits are kept in this process."""

    redis = None


@pytest.fixture
async def stub() -> AsyncIterator[gateway_service_pb2_grpc.GatewayServiceStub]:
    config = load_config(GatewayConfig, environ={"GATEWAY_RATE_LIMIT_WRITE_PER_SECOND": "0.1"})
    server, _, address = await start_server(
        [AuditInterceptor(), LimitsInterceptor.from_config(config, NoRedis())]
    )
    async with grpc.aio.insecure_channel(address) as channel:
        yield gateway_service_pb2_grpc.GatewayServiceStub(channel)
    await server.stop(None)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "ragline.audit"]


async def test_a_mutating_call_is_logged_with_who_what_target_and_outcome(
    stub: gateway_service_pb2_grpc.GatewayServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    delete = gateway_service_pb2.DeleteDocumentRequest(collection="docs", document_id="d1")
    await stub.DeleteDocument(delete, metadata=caller("acme", "key-alice", "writer"))
    (line,) = audit_lines(caplog)
    assert datetime.fromisoformat(line.pop("time")).tzinfo is not None
    assert line.pop("duration_seconds") >= 0
    assert line.pop("peer").startswith("ipv")
    assert line == {
        "tenant": "acme",
        "credential_id": "key-alice",
        "role": "writer",
        "rpc": "ragline.v1.GatewayService/DeleteDocument",
        "target": {"collection": "docs", "document_id": "d1"},
        "outcome": "OK",
    }
    # One line, on one line: a record never spans lines, whatever a request's ids hold.
    assert "\n" not in caplog.records[-1].getMessage()


async def test_refused_and_failed_calls_are_logged_with_their_status_and_reads_are_not(
    stub: gateway_service_pb2_grpc.GatewayServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    bob = caller("acme", "key-bob", "writer")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteDocument(
            gateway_service_pb2.DeleteDocumentRequest(document_id="missing"), metadata=bob
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # The write budget (0.1 per second, one call at once) is used: the limits refuse, and the audit log says so.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DeleteDocument(gateway_service_pb2.DeleteDocumentRequest(document_id="d2"), metadata=bob)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await stub.Search(
        gateway_service_pb2.SearchRequest(query=gateway_service_pb2.Query(text="q")), metadata=bob
    )
    # A call that no credential was bound for (authentication off) has no one to log.
    await stub.DeleteDocument(gateway_service_pb2.DeleteDocumentRequest(document_id="d3"))
    lines = audit_lines(caplog)
    assert [(line["target"]["document_id"], line["outcome"]) for line in lines] == [
        ("missing", "NOT_FOUND"),
        ("d2", "RESOURCE_EXHAUSTED"),
    ]


async def test_created_jobs_and_uploads_name_what_they_made(
    stub: gateway_service_pb2_grpc.GatewayServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="ragline.audit")
    document = common_pb2.DocumentContent(document_id="d", content=b"secret content")
    await stub.CreateIngestJob(
        gateway_service_pb2.CreateIngestJobRequest(collection="docs", documents=[document]),
        metadata=caller("acme", "key-carol", "writer"),
    )

    async def upload() -> AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest]:
        yield gateway_service_pb2.UploadIngestDocumentsRequest(collection="papers", document=document)
        yield gateway_service_pb2.UploadIngestDocumentsRequest(document=document)

    await stub.UploadIngestDocuments(upload(), metadata=caller("acme", "key-dave", "admin"))
    created, uploaded = audit_lines(caplog)
    assert created["target"] == {"collection": "docs", "documents": 1, "job_id": "job-1"}
    assert uploaded["target"] == {"collection": "papers", "documents": 2, "job_id": "job-2"}
    assert uploaded["role"] == "admin"
    assert "secret content" not in caplog.text
