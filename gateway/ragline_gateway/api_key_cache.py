"""API key verification at the gateway, from a short-lived cache of the retriever's key records.

A token `rgl_<key_id>_<secret>` names its key; the key's record (tenant, role, revoke time and
the SHA-256 of its secret) comes from the retriever's ApiKeyStoreService and is kept here for
GATEWAY_API_KEY_CACHE_SECONDS. So a Search pays no retriever call per request, only a hash and
a dictionary lookup, and a key revoked through any replica is refused by every replica once its
entry runs out. Unknown key ids are kept as well (as "no such key"), so made-up tokens cannot
make the gateway call the retriever on every request; a real key id is random, so no caller
can hold a negative entry for a key that is created later.

Concurrent calls with the same uncached key wait for one lookup. When the retriever cannot
answer and the key is not cached, the call is UNAVAILABLE: the key may be fine.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from ragline.api_keys import parse_token, secret_sha256
from ragline.errors import Unauthenticated, Unavailable
from ragline.v1 import api_key_store_service_pb2 as store_pb
from ragline.v1 import api_key_store_service_pb2_grpc as store_grpc
from ragline_gateway.principal import Principal, Role

API_KEY_LOOKUPS = Counter(
    "ragline_gateway_api_key_lookups_total",
    "API key checks by where the key's record came from: the cache (hit) or the retriever (miss), or error.",
    ["outcome"],
)
# Most key records kept; past it, expired entries go, then the oldest ones.
MAX_ENTRIES = 10_000
_FIX = "send the whole token that CreateApiKey or `ragline keys create` printed"


@dataclass(frozen=True)
class _Entry:
    record: store_pb.LookupStoredApiKeyResponse | None
    """The key's record, or None when the retriever has no such key."""
    expires: float
    """When the entry must be looked up again, on the monotonic clock."""


class ApiKeyVerifier:
    """Turns a Ragline API key into the Principal it names, or refuses it saying why."""

    def __init__(
        self,
        store: store_grpc.ApiKeyStoreServiceStub,
        cache_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Task[store_pb.LookupStoredApiKeyResponse | None]] = {}

    async def principal(self, token: str) -> Principal:
        """The caller the key names: its tenant, role and key id."""
        parsed = parse_token(token)
        if parsed is None:
            raise Unauthenticated(
                f"the credential starts with rgl_ but is not a well-formed Ragline API key "
                f"(rgl_<16 characters>_<43 characters>); {_FIX}",
                reason="API_KEY_MALFORMED",
            )
        record = await self._record(parsed.key_id)
        # Compared in constant time, so the time a refusal takes tells nothing about the stored hash.
        if record is None or not hmac.compare_digest(record.secret_sha256, secret_sha256(parsed.secret)):
            raise Unauthenticated(
                f"the API key is not known (no key has this id and secret); {_FIX}, or ask an admin of "
                "your tenant for a new key",
                reason="API_KEY_UNKNOWN",
            )
        key = record.api_key
        if key.HasField("revoke_time"):
            raise Unauthenticated(
                f"the API key {key.key_id} was revoked at {key.revoke_time.ToJsonString()}; ask an admin of "
                "your tenant for a new key",
                reason="API_KEY_REVOKED",
            )
        return Principal(tenant=key.tenant, role=Role(key.role), credential_id=key.key_id)

    def forget(self, key_id: str) -> None:
        """Drops the cached record of `key_id`, so this replica looks it up again (after a revocation)."""
        self._entries.pop(key_id, None)

    async def _record(self, key_id: str) -> store_pb.LookupStoredApiKeyResponse | None:
        entry = self._entries.get(key_id)
        if entry is not None and entry.expires > self._clock():
            API_KEY_LOOKUPS.labels("hit").inc()
            return entry.record
        task = self._pending.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key_id))
            self._pending[key_id] = task
            task.add_done_callback(lambda done: self._settled(key_id, done))
        # Shielded: one waiting call cancelled (its client went away) must not cancel the others' lookup.
        return await asyncio.shield(task)

    def _settled(self, key_id: str, task: asyncio.Task[store_pb.LookupStoredApiKeyResponse | None]) -> None:
        self._pending.pop(key_id, None)
        # Its failure was raised to every caller still waiting; reading it here keeps asyncio from
        # logging it as never retrieved when they had all gone.
        if not task.cancelled():
            task.exception()

    async def _lookup(self, key_id: str) -> store_pb.LookupStoredApiKeyResponse | None:
        request = store_pb.LookupStoredApiKeyRequest(key_id=key_id)
        try:
            record: store_pb.LookupStoredApiKeyResponse | None = await self._store.LookupStoredApiKey(
                request, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                API_KEY_LOOKUPS.labels("error").inc()
                raise Unavailable(
                    f"the API key could not be checked: the retriever's key store answered "
                    f"{exc.code().name} ({exc.details() or 'no details'}); retry later",
                    reason="API_KEY_STORE_UNAVAILABLE",
                    retry_after=1.0,
                ) from None
            record = None
        API_KEY_LOOKUPS.labels("miss").inc()
        self._remember(key_id, record)
        return record

    def _remember(self, key_id: str, record: store_pb.LookupStoredApiKeyResponse | None) -> None:
        if self._cache_seconds <= 0:
            return
        now = self._clock()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            while len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
        self._entries.pop(key_id, None)  # re-inserted last: the dictionary's order is the entries' age
        self._entries[key_id] = _Entry(record, now + self._cache_seconds)
