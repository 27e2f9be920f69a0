"""An ingest worker that cannot record a document's failure keeps trying while the retriever is unreachable,
instead of leaving the document leased (and its job unfinished) until the lease runs out."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import grpc

from ragline.v1 import common_pb2, ingest_queue_service_pb2
from ragline_gateway.config import GatewayConfig
from ragline_gateway.ingest_worker import IngestWorkers

UNREADABLE = ingest_queue_service_pb2.ClaimedDocument(
    claim=ingest_queue_service_pb2.IngestClaim(job_id="job-1"),
    collection="c",
    document=common_pb2.DocumentContent(
        document_id="broken.pdf", content=b"not a pdf", media_type="application/pdf"
    ),
    attempt=1,
)


class IngestQueue:
    """The IngestQueueService of a retriever that hands out one unreadable document and is down for `outage` calls."""

    def __init__(self, outage: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.outage = outage
        self.code = code
        self.claimed = False
        self.failures: list[float] = []
        self.recorded = asyncio.Event()

    async def ClaimIngestWork(self, request: Any, timeout: float) -> Any:
        documents = [] if self.claimed else [UNREADABLE]
        self.claimed = True
        return ingest_queue_service_pb2.ClaimIngestWorkResponse(documents=documents)

    async def FailIngestWork(self, request: Any, timeout: float) -> Any:
        assert request.claim.job_id == "job-1" and "not a readable PDF" in request.reason
        self.failures.append(time.monotonic())
        if len(self.failures) <= self.outage:
            raise grpc.aio.AioRpcError(
                self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), "retriever is down"
            )
        self.recorded.set()
        return ingest_queue_service_pb2.FailIngestWorkResponse(requeued=False)


async def _run(retriever: IngestQueue, seconds: float) -> None:
    config = replace(GatewayConfig(), ingest_workers=1, ingest_poll_seconds=0.05)
    workers = IngestWorkers(config, SimpleNamespace(ingest_queue=retriever), ingester=None)  # type: ignore[arg-type]
    workers.start()
    try:
        await asyncio.wait_for(retriever.recorded.wait(), timeout=seconds)
    except TimeoutError:
        pass
    finally:
        await workers.stop()


async def test_a_failure_is_recorded_once_the_retriever_is_back() -> None:
    retriever = IngestQueue(outage=3)
    await _run(retriever, seconds=20)
    assert retriever.recorded.is_set(), f"recorded after {len(retriever.failures)} calls"
    assert len(retriever.failures) == 4
    # Backing off between attempts, but never for more than a couple of seconds.
    gaps = [b - a for a, b in zip(retriever.failures, retriever.failures[1:], strict=False)]
    assert all(0.1 < gap < 2.5 for gap in gaps), gaps


async def test_an_error_that_another_try_cannot_fix_is_not_retried() -> None:
    retriever = IngestQueue(outage=10, code=grpc.StatusCode.INVALID_ARGUMENT)
    await _run(retriever, seconds=2)
    assert len(retriever.failures) == 1
