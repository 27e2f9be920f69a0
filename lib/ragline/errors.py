"""Errors a servicer raises to answer with a precise gRPC status and rich details.

Handlers raise these instead of calling `context.abort` so that business code stays free
of gRPC plumbing; the server interceptor turns them into a status with `google.rpc`
details (`BadRequest`, `RetryInfo`, `ErrorInfo`) that any gRPC client can read.
"""

from __future__ import annotations

import logging
import uuid

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# The `domain` of every ErrorInfo Ragline sends.
DOMAIN = "ragline.dev"
# The trailing metadata key of the request id every error carries (also ErrorInfo.metadata["request_id"]):
# the trace id, or a random id of the same shape when tracing is off.
REQUEST_ID_KEY = "ragline-request-id"
_log = logging.getLogger(__name__)

# The longest status message sent, in UTF-8 bytes. gRPC sends the message in the trailers twice
# (percent-encoded, and base64-encoded inside the rich status, with a field violation repeating it),
# and a client refuses trailers over 8-16 KiB with RESOURCE_EXHAUSTED instead of showing the error.
MAX_MESSAGE_BYTES = 1024


def shorten(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message`, or its beginning and end around a note of what was left out when it is over `limit` bytes.

    Messages quote the values that were wrong, which a client can make arbitrarily long; the
    beginning says what was wrong and the end usually what to do about it.
    """
    data = message.encode()
    if len(data) <= limit:
        return message
    # The note is at most 40 bytes; what is left is split between the beginning and the end.
    keep = (limit - 40) // 2
    head = data[:keep].decode(errors="ignore")
    tail = data[-keep:].decode(errors="ignore")
    return f"{head} …[{len(message) - len(head) - len(tail)} characters left out]… {tail}"


class ServiceError(Exception):
    """An error with a gRPC status code and a message meant for the caller."""

    code = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason
        self.retry_after = retry_after

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` sent to the caller, with details for programs to act on."""
        message = shorten(self.message)
        status = status_pb2.Status(code=getattr(code_pb2, self.code.name), message=message)
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=shorten(self.field), description=message
            )
            status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
        if self.reason is not None:
            status.details.add().Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return status


class InvalidArgument(ServiceError):
    """The request is malformed; retrying it unchanged will fail again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    """A named collection, document or resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    """The resource to create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(ServiceError):
    """The call carries no credential, or one that is malformed, unknown, expired or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    """The caller's credential is valid but its role does not allow the call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(ServiceError):
    """The system is not in a state the request needs (for example, a feature is not configured)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    """A queue or quota is full; retry later, after `retry_after` seconds if given."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    """A dependency is down or still starting; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    """The caller's deadline ran out before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


def logged_error_id(logger: logging.Logger, what: str, exc: BaseException, *, traceback: bool = True) -> str:
    """Logs `exc` in full (traceback, SQL, paths) under a new error id, and returns the id.

    A caller is told the id and never the exception's text, which can carry SQL, file paths or
    another tenant's names; an operator finds the full story by searching the log for the id.
    `traceback` False logs `what` alone, for failures expected in numbers (a dependency down).
    """
    error_id = uuid.uuid4().hex[:16]
    logger.error("%s (error id %s)", what, error_id, exc_info=exc if traceback else None)
    return error_id


class Internal(ServiceError):
    """An unexpected failure: the caller gets a generic message and an error id, the log the details."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, error_id: str) -> None:
        super().__init__(
            f"internal error (error id {error_id}); the server log has the details under this id",
            reason="INTERNAL",
        )
        self.error_id = error_id


def from_rpc_error(dependency: str, exc: grpc.aio.AioRpcError) -> ServiceError:
    """The error to answer with when a call to `dependency` failed: same code, message naming the dependency.

    A status a Ragline service wrote (it carries rich details) was meant for callers and is passed
    on. Any other status was made by the gRPC library itself, for a connection that failed or a
    reply that never came, and its text names internal addresses and socket errors: the caller
    gets an error id instead, and the log the text.
    """
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"deadline exceeded while waiting for the {dependency}"
    elif _written_by_a_service(exc):
        message = f"{dependency}: {exc.details() or code.name.lower()}"
    else:
        error_id = logged_error_id(
            _log, f"call to the {dependency} failed: {code.name} {exc.details()}", exc, traceback=False
        )
        message = f"the {dependency} could not be reached or did not answer (error id {error_id}); try again"
    # A specific reason (EMBEDDING_MODEL_CHANGED, say) is kept: callers act on it. A generic one
    # (the code's name) becomes the dependency's, so that a caller sees which service refused.
    reason = _reason_of(exc) if _written_by_a_service(exc) else None
    if reason is None or reason == code.name:
        reason = f"{dependency.upper()}_{code.name}"
    error = ServiceError(message, reason=reason)
    error.code = code
    return error


def _reason_of(exc: grpc.aio.AioRpcError) -> str | None:
    """The reason of the ErrorInfo a Ragline service attached to its status, if any."""
    status = rpc_status.from_call(exc)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN and info.reason:
            return str(info.reason)
    return None


def _written_by_a_service(exc: grpc.aio.AioRpcError) -> bool:
    """Whether the status came from a server's handler (rich details attached), not from the gRPC library."""
    return any(key == "grpc-status-details-bin" for key, _ in exc.trailing_metadata() or ())
