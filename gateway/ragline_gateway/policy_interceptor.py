"""The common frame of the gateway's interceptors that act on a public method's caller: limits and audit.

Each of them runs some code around every call of a method listed in `principal.METHODS`
(health and reflection are left alone), whatever the method's kind: unary or streaming
requests and replies. This base wraps a method's handler once, at its first call, as
`ragline.server`'s interceptor does, and runs the subclass's `around` context manager
around the handler: code before the handler, after it, and on its failure or cancellation
(a stream's reply is held until its last message or its cancellation).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import grpc

from ragline_gateway.principal import METHODS, MethodPolicy, Principal, current


@dataclass
class Call:
    """One call of a public method, as an interceptor's `around` sees it."""

    path: str
    """The full method path, /ragline.v1.GatewayService/Search."""
    policy: MethodPolicy
    """What the method asks of its caller."""
    principal: Principal
    """The caller, as the authentication interceptor bound it."""
    request: Any
    """The request, or for a client-streaming method the iterator of requests; `around` may replace it."""
    context: grpc.aio.ServicerContext
    """The call's context."""
    response: Any = None
    """The reply of a unary-reply method once the handler returned it."""


class PolicyInterceptor(grpc.aio.ServerInterceptor):
    """Runs `around` around every call of a method in METHODS that has a bound principal."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def around(self, call: Call) -> AbstractAsyncContextManager[None]:
        """Entered before the handler runs and left when it has finished, failed or been cancelled."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        path = handler_call_details.method
        wrapped = self._wrapped.get(path)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        policy = METHODS.get(path)
        if handler is None or policy is None:
            return handler
        wrapped = self._wrap(handler, path, policy)
        self._wrapped[path] = wrapped
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, path: str, policy: MethodPolicy) -> grpc.RpcMethodHandler:
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, self._unary),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, self._stream),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, self._unary),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, self._stream),
        )
        for kind, make_handler, wrap in kinds:
            behavior = getattr(handler, kind)
            if behavior:
                return make_handler(
                    wrap(behavior, path, policy),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _unary(self, behavior: Any, path: str, policy: MethodPolicy) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            principal = _bound()
            if principal is None:
                return await behavior(request, context)
            call = Call(path, policy, principal, request, context)
            async with self.around(call):
                call.response = await behavior(call.request, context)
            return call.response

        return wrapper

    def _stream(self, behavior: Any, path: str, policy: MethodPolicy) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal = _bound()
            if principal is None:
                async for response in behavior(request, context):
                    yield response
                return
            call = Call(path, policy, principal, request, context)
            async with self.around(call):
                async for response in behavior(call.request, context):
                    yield response

        return wrapper


def _bound() -> Principal | None:
    """The caller the authentication interceptor bound, or None when it bound none (authentication off)."""
    try:
        return current()
    except LookupError:
        return None
