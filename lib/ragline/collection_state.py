"""Collections' state published in Redis, so that a query need not ask the retriever for it.

Every gateway cache key holds its collection's generation, which only the retriever's database
knows for sure; asking the retriever on every query is a gRPC hop (about 1 ms) that a warm query
otherwise does not need. So the retriever publishes what a query needs of a collection (model,
dimension, creation time, generation) in the Redis the gateways cache in, and the gateway reads
it in the same round trip as its cache entry. Collections are named within a tenant, so every
key holds the tenant and the collection's name: two tenants' `default` collections never share
a state. Published state must never be older than a write
that has returned, since a query after an ingest must not get answers built from the old
content. The protocol, per collection:

- The *epoch* key holds a random token, replaced after every committed change.
- The retriever publishes a state it read from the database only if the epoch is still the one
  it read before its read (a Lua script checks and sets atomically), with a lease: the state
  expires `lease` after the moment Redis served that epoch, by Redis's own clock (PXAT), so a
  publication delayed on its way to Redis cannot outlive its lease.
- After committing a change, and before answering, the retriever replaces the epoch and deletes
  the state in one transaction (`announce_change`). A state read before the commit can then no
  longer be published, and one already published is gone.
- If Redis cannot be told, the retriever waits out the lease before it answers: every state
  published from a read before the commit has expired by then.

So a state a gateway finds is never older than a change whose call has returned. A retriever
without Redis never publishes, and gateways then ask it on every query. Every retriever replica
must therefore use the gateways' Redis, or none may.
"""

from __future__ import annotations

import secrets
import time

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError

from ragline.v1 import common_pb2

_PREFIX = "ragline:collection"

# Sets the state (KEYS[2] = ARGV[2], expiring at ARGV[3], Unix ms) if the epoch KEYS[1] is still ARGV[1].
_PUBLISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[3])
end
return false
"""
# The epoch KEYS[1] (made ARGV[1] first if there is none: after a flush, or before any change),
# and Redis's clock in Unix ms.
_EPOCH = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local now = redis.call('TIME')
return {redis.call('GET', KEYS[1]), now[1] * 1000 + math.floor(now[2] / 1000)}
"""


def _tag(tenant: str, collection: str) -> str:
    # A collection name has no '/', so the last '/' splits the pair: two tenants' collections of
    # the same name never share a key, whatever characters a tenant name holds.
    return f"{tenant}/{collection}"


def state_key(tenant: str, collection: str) -> str:
    """The key of the published state of `tenant`'s collection `collection` (the braces keep both
    of its keys in one cluster slot)."""
    return f"{_PREFIX}:{{{_tag(tenant, collection)}}}:state"


def _epoch_key(tenant: str, collection: str) -> str:
    return f"{_PREFIX}:{{{_tag(tenant, collection)}}}:epoch"


def decode_state(value: bytes) -> common_pb2.Collection | None:
    """A published state: the collection without its counts; None if `value` is not one."""
    try:
        return common_pb2.Collection.FromString(value)
    except DecodeError:
        return None


class Publication:
    """One publication of a collection's state: `begin` before reading it from the database, then `publish`."""

    def __init__(self, client: aioredis.Redis, tenant: str, collection: str, lease_seconds: float) -> None:
        self._client = client
        self._keys = (_epoch_key(tenant, collection), state_key(tenant, collection))
        self._lease = lease_seconds
        self._epoch: bytes | None = None
        self._expires_at_ms = 0
        self._expires = 0.0

    async def begin(self) -> None:
        """Reads the epoch; the lease counts from the moment Redis served it."""
        began = time.monotonic()
        self._epoch, redis_now_ms = await self._client.eval(_EPOCH, 1, self._keys[0], secrets.token_hex(16))
        self._expires_at_ms = int(redis_now_ms) + int(self._lease * 1000)
        self._expires = began + self._lease

    async def publish(self, collection: common_pb2.Collection) -> bool:
        """Publishes `collection` (read after `begin`) unless it changed since; whether it was."""
        if self._epoch is None or time.monotonic() >= self._expires:
            return False
        published = await self._client.eval(
            _PUBLISH,
            2,
            *self._keys,
            self._epoch,
            collection.SerializeToString(),
            self._expires_at_ms,
        )
        return published is not None


async def announce_change(client: aioredis.Redis, tenant: str, collection: str) -> None:
    """After a committed change to `tenant`'s `collection`: a new epoch and no published state, at once."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(_epoch_key(tenant, collection), secrets.token_hex(16))
        pipe.delete(state_key(tenant, collection))
        await pipe.execute()
