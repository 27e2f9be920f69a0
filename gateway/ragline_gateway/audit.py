"""The audit log: one JSON line per mutating or admin call, saying who did what to what, and how it ended.

Every call of a method whose least role is writer or admin (`principal.METHODS`) is logged on
the `ragline.audit` logger, refused calls included (install this interceptor outside the
limits, so that a call the limits refuse is logged too). A line holds the time, the tenant,
the credential id (an API key's id or a JWT's subject, never a secret), the role, the RPC,
its target (the collection, document id, job id or key id the request names, or the
response names for what the call created) and its outcome (the gRPC status code name).
Targets are read only from fields of those names, so a secret in a request or a response
(the key CreateApiKey shows once) can never reach the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message

from ragline.errors import ServiceError, shorten
from ragline_gateway.policy_interceptor import Call, PolicyInterceptor
from ragline_gateway.principal import Role

audit_log = logging.getLogger("ragline.audit")

# The request and response fields that name what a call acts on; no other field is ever read.
TARGET_FIELDS = ("collection", "document_id", "job_id", "key_id", "name")
# Longest target value logged, in bytes: values come from requests, which may be refused for their length.
MAX_TARGET_BYTES = 1024


def _targets(message: Any, into: dict[str, Any]) -> None:
    """Adds the TARGET_FIELDS that `message` sets, at its top level or in a message field, to `into`."""
    if not isinstance(message, Message):
        return
    for field, value in message.ListFields():
        if field.name in TARGET_FIELDS and isinstance(value, str) and value:
            into.setdefault(field.name, shorten(value, MAX_TARGET_BYTES))
        elif field.name == "documents" and field.is_repeated:
            into["documents"] = len(value)
        elif field.message_type is not None and not field.is_repeated:
            for inner, inner_value in value.ListFields():
                if inner.name in TARGET_FIELDS and isinstance(inner_value, str) and inner_value:
                    into.setdefault(inner.name, shorten(inner_value, MAX_TARGET_BYTES))


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "OK" if code in (None, 0) else str(code)


def outcome(exc: BaseException | None, context: grpc.aio.ServicerContext) -> str:
    """The status code name a call ends with when its handler returned (None) or raised `exc`."""
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return _code_name(context.code())
    if isinstance(exc, ServiceError):
        return _code_name(exc.code)
    if isinstance(exc, grpc.aio.AioRpcError):
        return _code_name(exc.code())
    if isinstance(exc, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0.05 else "CANCELLED"
    return "INTERNAL"


class AuditInterceptor(PolicyInterceptor):
    """Logs one `ragline.audit` line per call of a writer or admin method.

    Install it after the authentication interceptor (it reads the caller that one binds) and
    before the limits interceptor (so that calls the limits refuse are logged too).
    """

    async def _observed(self, requests: AsyncIterator[Any], target: dict[str, Any]) -> AsyncIterator[Any]:
        """An upload stream's messages, noting its collection and how many documents it held."""
        count = 0
        async for request in requests:
            if not count:
                _targets(request, target)
                target.pop("document_id", None)
            count += 1
            target["documents"] = count
            yield request

    @asynccontextmanager
    async def around(self, call: Call) -> AsyncIterator[None]:
        if call.policy.role < Role.WRITER:
            yield
            return
        started = time.perf_counter()
        target: dict[str, Any] = {}
        if isinstance(call.request, Message):
            _targets(call.request, target)
        else:
            call.request = self._observed(call.request, target)
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            _targets(call.response, target)
            principal = call.principal
            record = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "tenant": principal.tenant,
                "credential_id": principal.credential_id,
                "role": principal.role.name.lower(),
                "rpc": call.path.lstrip("/"),
                "target": target,
                "outcome": outcome(error, call.context),
                "duration_seconds": round(time.perf_counter() - started, 6),
                "peer": call.context.peer(),
            }
            audit_log.info(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
