"""An in-process gateway server with the limits and audit interceptors, for their tests.

The servicer is a stand-in that answers at once (an AskStream sends one event and then
waits until cancelled, so that a test can hold an Ask slot); a tiny interceptor binds the
Principal that the call's `x-test-*` metadata names, as the authentication interceptor
binds the credential's, and binds none when the metadata is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from ragline.errors import NotFound
from ragline.server import _Interceptor
from ragline.v1 import common_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from ragline_gateway.principal import Principal, Role, bind, unbind


class StandIn(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Answers every call at once; counts the AskStream calls in progress."""

    def __init__(self) -> None:
        self.streams_in_progress = 0

    async def Search(self, request: Any, context: Any) -> gateway_service_pb2.SearchResponse:
        return gateway_service_pb2.SearchResponse(hits=[common_pb2.SearchHit(text="hit")])

    async def Ask(self, request: Any, context: Any) -> gateway_service_pb2.AskResponse:
        return gateway_service_pb2.AskResponse(answer="answer")

    async def AskStream(
        self, request: Any, context: Any
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        self.streams_in_progress += 1
        try:
            yield gateway_service_pb2.AskStreamResponse(delta="first")
            await asyncio.Event().wait()
        finally:
            self.streams_in_progress -= 1

    async def IngestDocuments(
        self, request: Any, context: Any
    ) -> gateway_service_pb2.IngestDocumentsResponse:
        return gateway_service_pb2.IngestDocumentsResponse(generation=1)

    async def CreateIngestJob(
        self, request: Any, context: Any
    ) -> gateway_service_pb2.CreateIngestJobResponse:
        return gateway_service_pb2.CreateIngestJobResponse(job=common_pb2.IngestJob(job_id="job-1"))

    async def UploadIngestDocuments(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> gateway_service_pb2.UploadIngestDocumentsResponse:
        count = 0
        async for _ in request_iterator:
            count += 1
        return gateway_service_pb2.UploadIngestDocumentsResponse(
            job=common_pb2.IngestJob(job_id=f"job-{count}")
        )

    async def DeleteDocument(self, request: Any, context: Any) -> gateway_service_pb2.DeleteDocumentResponse:
        if request.document_id == "missing":
            raise NotFound(f"document {request.document_id!r} not found")
        return gateway_service_pb2.DeleteDocumentResponse(deleted_chunks=3)


def _named(context: grpc.aio.ServicerContext) -> Principal | None:
    metadata = dict(context.invocation_metadata() or ())
    if "x-test-tenant" not in metadata:
        return None
    role = Role[metadata.get("x-test-role", "admin").upper()]
    return Principal(metadata["x-test-tenant"], role, metadata["x-test-credential"])


class BindFromMetadata(grpc.aio.ServerInterceptor):
    """Binds the Principal named by x-test-tenant, x-test-credential and x-test-role for the call.

    The metadata is read in the handler, not in `intercept_service`: the server's own interceptor
    keeps the handler it got at a method's first call for every later call.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler

        def unary(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                principal = _named(context)
                if principal is None:
                    return await behavior(request, context)
                token = bind(principal)
                try:
                    return await behavior(request, context)
                finally:
                    unbind(token)

            return wrapper

        def stream(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                principal = _named(context)
                if principal is None:
                    async for response in behavior(request, context):
                        yield response
                    return
                token = bind(principal)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    unbind(token)

            return wrapper

        options = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **options)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **options)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **options)
        return handler


def caller(tenant: str, credential: str, role: str = "admin") -> list[tuple[str, str]]:
    """The metadata naming a caller."""
    return [("x-test-tenant", tenant), ("x-test-credential", credential), ("x-test-role", role)]


async def start_server(
    interceptors: Sequence[grpc.aio.ServerInterceptor],
) -> tuple[grpc.aio.Server, StandIn, str]:
    """A running server with the server module's interceptor, the binding one, then `interceptors`."""
    server = grpc.aio.server(interceptors=[_Interceptor(), BindFromMetadata(), *interceptors])
    servicer = StandIn()
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, f"127.0.0.1:{port}"
