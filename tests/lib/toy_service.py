"""A toy service run by ragline.server.run_service, for testing the bootstrap without any model or database.

Its `start` takes a second (so health starts NOT_SERVING); its readiness fails while the
file named by TOY_DOWN_FILE exists; `Search` sleeps for as many seconds as the query says,
and raises the error the query names, so the tests can drive every path; a query starting with
"long:" is refused with a message quoting it whole. `UploadIngestDocuments` reads every message
of the stream and answers with their count as the job id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from ragline.config import setting
from ragline.errors import InvalidArgument, ResourceExhausted
from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import common_pb2, gateway_service_pb2, gateway_service_pb2_grpc


class ToyGateway(gateway_service_pb2_grpc.GatewayServiceServicer):
    def __init__(self, down_file: Path) -> None:
        self.down_file = down_file

    async def start(self) -> None:
        await asyncio.sleep(1.0)

    async def check_ready(self) -> None:
        if await asyncio.to_thread(self.down_file.exists):
            raise RuntimeError("toy dependency is down")

    async def stop(self) -> None:
        print("toy stop() called", flush=True)

    async def Search(
        self, request: gateway_service_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.SearchResponse:
        text = request.query.text
        if text == "invalid":
            raise InvalidArgument("query is invalid", field="query")
        if text == "exhausted":
            raise ResourceExhausted("queue is full", retry_after=1.5)
        if text.startswith("long:"):
            raise InvalidArgument(f"query {text!r} is too long; send a shorter one", field="query")
        if text == "crash":
            # What an unexpected failure's text can hold: SQL, a file path, another tenant's name.
            raise RuntimeError(
                "secret internal detail: SELECT * FROM api_keys WHERE tenant = 'acme' "
                "(/srv/ragline/retriever/store.py line 12)"
            )
        await asyncio.sleep(float(text or 0))
        return gateway_service_pb2.SearchResponse(hits=[common_pb2.SearchHit(text="done")])

    async def UploadIngestDocuments(
        self,
        request_iterator: AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest],
        context: grpc.aio.ServicerContext,
    ) -> gateway_service_pb2.UploadIngestDocumentsResponse:
        count = 0
        async for _ in request_iterator:
            count += 1
        return gateway_service_pb2.UploadIngestDocumentsResponse(job=common_pb2.IngestJob(job_id=str(count)))


@dataclass(frozen=True)
class ToyConfig:
    """The toy's own setting."""

    down_file: str = setting("TOY_DOWN_FILE", "")
    """While a file exists at this path, the toy's dependency is down."""


def build(config: ToyConfig) -> tuple[Lifecycle, list[Servicer]]:
    toy = ToyGateway(Path(config.down_file))
    add = gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server
    return toy, [Servicer("ragline.v1.GatewayService", add, toy)]


if __name__ == "__main__":
    run_service("toy", ToyConfig, build, port=0, metrics_port=0)
