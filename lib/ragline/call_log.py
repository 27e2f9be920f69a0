"""Log lines that join a trace: JSON records under LOG_FORMAT=json, and one line per RPC.

With `LOG_FORMAT=json` (the containers' setting) every record is one JSON object on one line,
with the trace and span ids of the work that logged it, so a log store can jump from a line to
its trace and back; the server interceptor adds one line per call (service, method, status code,
duration, tenant, request id). Text stays the default, for people reading `make run`'s output,
and has no per-call lines.

A call's tenant is known in different places: an internal service reads it from the request, the
gateway from the caller's credential, bound by its authentication interceptor inside the server's
own. `begin` opens a record that both can fill (`note_tenant`) and `finish` writes.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ragline import tracing

RPC_LOGGER = logging.getLogger("ragline.rpc")
# Calls that are not logged one by one: health checks come every few seconds from every prober.
_QUIET_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


@dataclass
class CallRecord:
    """What the per-call log line says about a call, filled in while it is served."""

    tenant: str = ""
    """The tenant the call acts for, when there is one."""
    request_id: str = ""
    """The id its error was returned with (the trace id), once it failed."""


_current: ContextVar[CallRecord | None] = ContextVar("ragline_call_record", default=None)
_json = False


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, trace ids, the exception and any `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id, span_id = tracing.trace_ids()
        if trace_id:
            entry["trace_id"], entry["span_id"] = trace_id, span_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Logs one line per record to stderr, which process supervisors collect: text, or JSON with `json`."""
    global _json
    _json = log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    if _json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def begin(request: Any) -> CallRecord:
    """Opens the record of the call being served; its tenant is the request's `tenant` field, if it has one."""
    record = CallRecord(tenant=str(getattr(request, "tenant", "") or ""))
    _current.set(record)
    return record


def note_tenant(tenant: str) -> None:
    """Names the tenant of the call being served (the gateway does, from the caller's credential)."""
    record = _current.get()
    if record is not None:
        record.tenant = tenant
    current = tracing.current_span()
    if current.is_recording():
        current.set_attribute("ragline.tenant", tenant)


def finish(record: CallRecord, service: str, method: str, code: str, seconds: float) -> None:
    """Writes the call's line, under LOG_FORMAT=json only."""
    if not _json or service in _QUIET_SERVICES:
        return
    fields: dict[str, Any] = {
        "service": service,
        "method": method,
        "code": code,
        "duration_seconds": round(seconds, 6),
    }
    if record.tenant:
        fields["tenant"] = record.tenant
    if record.request_id:
        fields["request_id"] = record.request_id
    level = logging.INFO if code == "OK" else logging.WARNING
    RPC_LOGGER.log(level, "%s/%s %s in %.3fs", service, method, code, seconds, extra={"fields": fields})
