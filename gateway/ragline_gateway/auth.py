"""Authentication at the gateway: every public method's caller is named by a credential, or refused.

The interceptor reads `authorization: Bearer <token>` on every call of a method in
`principal.METHODS` (health and reflection stay open, as probes and grpcurl expect). A token
that starts with `rgl_` is a Ragline API key, checked by the key verifier; any other is a
JWT, checked by `jwt_auth` when a JWKS is configured. The Principal is bound for the call,
inside the wrapped handler, so that the interceptors installed after this one and the handler
itself read it with `principal.current()`.

`RoleInterceptor` then refuses a caller whose role is below the method's (PERMISSION_DENIED names
both). It is a separate interceptor, installed after the audit interceptor, so that a write or
admin call refused for its role is in the audit log like any other refused call; the gateway
installs AuthInterceptor, AuditInterceptor, RoleInterceptor, LimitsInterceptor in that order.

With GATEWAY_AUTH=off every call is made by one administrator of the `default` tenant, so the
handlers can always ask who is calling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from ragline.api_keys import TOKEN_PREFIX
from ragline.errors import PermissionDenied, Unauthenticated
from ragline_gateway.api_key_cache import ApiKeyVerifier
from ragline_gateway.jwt_auth import JwtVerifier
from ragline_gateway.policy_interceptor import Call, PolicyInterceptor
from ragline_gateway.principal import METHODS, Principal, Role, bind, unbind

# The caller of every call while authentication is off.
ANONYMOUS = Principal("default", Role.ADMIN, "anonymous")
_SEND = (
    "send the metadata `authorization: Bearer <token>` with a Ragline API key (rgl_…, from "
    "`ragline keys create` or the state folder's api_key file) or a JWT from your identity provider"
)


class Authenticator:
    """Turns a call's `authorization` metadata into its caller, or refuses it with what to send."""

    def __init__(self, keys: ApiKeyVerifier, jwts: JwtVerifier | None) -> None:
        self._keys = keys
        self._jwts = jwts

    async def principal(self, metadata: Any) -> Principal:
        """The caller named by the `authorization` entry of `metadata` (a call's invocation metadata)."""
        values = [value for key, value in metadata or () if key == "authorization"]
        if not values:
            raise Unauthenticated(f"this call needs a credential; {_SEND}", reason="CREDENTIAL_MISSING")
        if len(values) > 1:
            raise Unauthenticated(
                "the call carries more than one authorization entry; send exactly one",
                reason="CREDENTIAL_MALFORMED",
            )
        scheme, _, token = str(values[0]).strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                f"the authorization metadata must read `Bearer <token>`; {_SEND}",
                reason="CREDENTIAL_MALFORMED",
            )
        if token.startswith(TOKEN_PREFIX):
            return await self._keys.principal(token)
        if self._jwts is None:
            raise Unauthenticated(
                "the credential is not a Ragline API key (rgl_…) and this gateway accepts no JWTs "
                "(neither GATEWAY_JWT_JWKS_FILE nor GATEWAY_JWT_JWKS_URL is set); send an API key",
                reason="CREDENTIAL_MALFORMED",
            )
        return await self._jwts.principal(token)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Binds the caller of every call of a method in METHODS, refusing calls without an acceptable credential.

    `authenticator` None binds ANONYMOUS on every call (GATEWAY_AUTH=off). Install it before the
    audit, role and limits interceptors, which read the caller it binds.
    """

    def __init__(self, authenticator: Authenticator | None) -> None:
        self._authenticator = authenticator
        # A method's wrapped handler, made at its first call; the credential is read per call, inside it.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

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
        if handler is None or path not in METHODS:
            return handler
        wrapped = self._wrap(handler)
        self._wrapped[path] = wrapped
        return wrapped

    async def _caller(self, context: grpc.aio.ServicerContext) -> Principal:
        if self._authenticator is None:
            return ANONYMOUS
        return await self._authenticator.principal(context.invocation_metadata())

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
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
                    wrap(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _unary(self, behavior: Any) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = bind(await self._caller(context))
            try:
                return await behavior(request, context)
            finally:
                unbind(token)

        return wrapper

    def _stream(self, behavior: Any) -> Any:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = bind(await self._caller(context))
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                unbind(token)

        return wrapper


class RoleInterceptor(PolicyInterceptor):
    """Refuses a call whose caller's role is below its method's, with PERMISSION_DENIED naming both roles.

    Install it after the audit interceptor (a refused write or admin call is logged) and before the
    limits (a refused call spends no budget).
    """

    @asynccontextmanager
    async def around(self, call: Call) -> AsyncIterator[None]:
        needed, held = call.policy.role, call.principal.role
        if held < needed:
            method = call.path.rpartition("/")[2]
            raise PermissionDenied(
                f"{method} needs the {needed.name.lower()} role; this credential has the {held.name.lower()} "
                f"role; ask an admin of tenant {call.principal.tenant!r} for a {needed.name.lower()} key",
                reason="ROLE_TOO_LOW",
            )
        yield
