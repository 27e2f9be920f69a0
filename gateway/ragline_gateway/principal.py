"""Who is calling the gateway, and what each public method asks of the caller.

A credential (an API key or a JWT) names a principal: one tenant and one role. The
authentication interceptor binds it for the duration of the call; handlers, limits and the
audit log read it with `current()`. Every public method's needs are in one table, `METHODS`,
so the role a method requires and the rate class it is counted in are found in one place.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar, Token
from dataclasses import dataclass

from ragline import call_log


class Role(enum.IntEnum):
    """What a principal may do; each role includes everything the roles below it may."""

    READER = 1
    """Search, Ask, and read documents, ingest jobs and conversations."""
    WRITER = 2
    """Also ingest, delete documents and conversations, and cancel ingest jobs."""
    ADMIN = 3
    """Also manage the API keys and the collections of its tenant."""


class RateClass(enum.Enum):
    """The groups of methods whose calls per second are limited together, per credential."""

    QUERY = "query"
    """Search, Ask and AskStream."""
    READ = "read"
    """Reading documents and ingest jobs."""
    WRITE = "write"
    """Ingesting, deleting and cancelling."""
    ADMIN = "admin"
    """Managing keys and collections."""


@dataclass(frozen=True)
class Principal:
    """The caller of one gateway call, as its credential names it."""

    tenant: str
    """The tenant whose collections, documents, jobs, caches and keys the call may touch."""
    role: Role
    """What the call may do."""
    credential_id: str
    """The API key's id or the JWT's subject: what the audit log and the limits name. Never a secret."""


@dataclass(frozen=True)
class MethodPolicy:
    """What one public method asks of its caller."""

    role: Role
    """The least role that may call it."""
    rate_class: RateClass
    """The group its calls are counted in by the rate limits."""


_GATEWAY = "/ragline.v1.GatewayService/"
_ADMIN = "/ragline.v1.AdminService/"

METHODS: dict[str, MethodPolicy] = {
    _GATEWAY + "Search": MethodPolicy(Role.READER, RateClass.QUERY),
    _GATEWAY + "Ask": MethodPolicy(Role.READER, RateClass.QUERY),
    _GATEWAY + "AskStream": MethodPolicy(Role.READER, RateClass.QUERY),
    _GATEWAY + "GetDocument": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "ListDocuments": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "GetIngestJob": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "ListIngestJobs": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "ListConversations": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "GetConversation": MethodPolicy(Role.READER, RateClass.READ),
    _GATEWAY + "IngestDocuments": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _GATEWAY + "CreateIngestJob": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _GATEWAY + "UploadIngestDocuments": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _GATEWAY + "DeleteDocument": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _GATEWAY + "CancelIngestJob": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _GATEWAY + "DeleteConversation": MethodPolicy(Role.WRITER, RateClass.WRITE),
    _ADMIN + "CreateApiKey": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "ListApiKeys": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "RevokeApiKey": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "CreateCollection": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "GetCollection": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "ListCollections": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "DeleteCollection": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
    _ADMIN + "MigrateCollection": MethodPolicy(Role.ADMIN, RateClass.ADMIN),
}

_current: ContextVar[Principal] = ContextVar("ragline_principal")


def bind(principal: Principal) -> Token[Principal]:
    """Makes `principal` the caller of the current call; `unbind` with the token when it ends.

    Its tenant goes on the call's log line and span."""
    call_log.note_tenant(principal.tenant)
    return _current.set(principal)


def unbind(token: Token[Principal]) -> None:
    """Ends what `bind` began."""
    _current.reset(token)


def current() -> Principal:
    """The caller of the call being served; a LookupError outside an authenticated call."""
    return _current.get()
