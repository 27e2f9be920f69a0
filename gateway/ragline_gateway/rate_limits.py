"""Per-credential rate limits and a per-tenant cap on Ask calls in progress, shared by every gateway replica.

Three limits, each off when its setting is 0:

- calls per second per credential, for each rate class of `principal.METHODS` (query, read,
  write, admin), with a burst of GATEWAY_RATE_LIMIT_BURST_SECONDS' worth;
- document content bytes per minute per credential, across IngestDocuments, CreateIngestJob
  and UploadIngestDocuments (charged as the requests arrive, an upload stream message by
  message); a request larger than a minute's worth passes when the credential's budget is
  full and leaves it in debt, so large documents are slowed, not refused forever;
- Ask and AskStream calls in progress per tenant. Generation is the expensive stage and the
  generator is shared by every tenant, so the cap is the tenant's, whatever number of keys it
  makes; a stream holds its slot until its last message or its cancellation.

Rates are token buckets kept in Redis and taken by one Lua script, atomic, and timed by the
Redis server's clock (`TIME`), so replicas whose clocks differ still share one budget. Ask
slots are leases in a sorted set scored by their expiry on the server's clock; a replica
renews its leases while the calls run, so a crashed replica's slots come back after
GATEWAY_ASK_LEASE_SECONDS. Redis is optional: when a command fails, every replica falls back
to counters of its own (each then allows the configured amounts, so the fleet allows at most
replicas times as much) and tries Redis again after REDIS_RETRY_SECONDS. A call is never
failed because Redis is down.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter

from ragline.errors import ResourceExhausted
from ragline.v1 import gateway_service_pb2
from ragline_gateway.cache import digest
from ragline_gateway.config import GatewayConfig
from ragline_gateway.policy_interceptor import Call, PolicyInterceptor
from ragline_gateway.principal import Principal, RateClass

log = logging.getLogger(__name__)

RATE_LIMITED = Counter(
    "ragline_gateway_rate_limited_total",
    "Calls refused with RESOURCE_EXHAUSTED by a limit: a rate class, ingest_bytes or ask_concurrency.",
    ["limit"],
)
# After a Redis failure, limits are kept in this process for this long before Redis is tried again.
REDIS_RETRY_SECONDS = 2.0
# The delay suggested to a caller refused an Ask slot: an answer takes seconds, a slot frees when one ends.
ASK_RETRY_SECONDS = 1.0
# Local buckets kept before the full (idle) ones are forgotten.
_MAX_LOCAL_BUCKETS = 10_000
_PREFIX = "ragline:v1:limits"

# KEYS[1]: the bucket. ARGV: rate per second, capacity, cost. Returns {1, ""} when taken, or {0, seconds to
# wait} as a string (Lua numbers come back to the client as integers). A cost over the capacity needs a full
# bucket and leaves it negative.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, capacity, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local need = math.min(cost, capacity)
if tokens < need then
  return {0, tostring((need - tokens) / rate)}
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {1, ''}
"""
# KEYS[1]: the tenant's leases. ARGV: cap, lease seconds, lease id. Expired leases are dropped first.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""
# KEYS[1]: the tenant's leases. ARGV: lease seconds, lease id. Extends a lease that still exists.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""

_INGEST_METHODS = ("IngestDocuments", "CreateIngestJob", "UploadIngestDocuments")
_ASK_METHODS = ("Ask", "AskStream")


def ask_slots_key(tenant: str) -> str:
    """The Redis key of the sorted set of the tenant's Ask leases, scored by their expiry."""
    return f"{_PREFIX}:ask:{digest(tenant)}"


class RedisHolder(Protocol):
    """Whatever holds the gateway's Redis client once it is connected: `Dependencies`."""

    redis: aioredis.Redis | None


@dataclass(frozen=True)
class Bucket:
    """One token bucket limit: how fast it refills, how much it holds, and how to name it to a caller."""

    name: str
    """The limit's name in keys, metrics and messages: a rate class, or ingest_bytes."""
    rate: float
    """Tokens (calls or bytes) added per second."""
    capacity: float
    """Most tokens held: what an idle credential may spend at once."""
    description: str
    """What the limit allows, for the refusal message."""


def _rate_bucket(rate_class: RateClass, per_second: float, burst_seconds: float) -> Bucket | None:
    if per_second <= 0:
        return None
    setting = f"GATEWAY_RATE_LIMIT_{rate_class.name}_PER_SECOND"
    capacity = max(1.0, per_second * burst_seconds)
    description = f"{per_second:g} {rate_class.value} calls per second, bursts of {capacity:g} ({setting})"
    return Bucket(rate_class.value, per_second, capacity, description)


class Limits:
    """Decides whether a credential may make a call, send document bytes or start an Ask."""

    def __init__(self, config: GatewayConfig, deps: RedisHolder) -> None:
        self._deps = deps
        per_second = {
            RateClass.QUERY: config.rate_limit_query_per_second,
            RateClass.READ: config.rate_limit_read_per_second,
            RateClass.WRITE: config.rate_limit_write_per_second,
            RateClass.ADMIN: config.rate_limit_admin_per_second,
        }
        self._rates = {
            rate_class: _rate_bucket(rate_class, rate, config.rate_limit_burst_seconds)
            for rate_class, rate in per_second.items()
        }
        per_minute = config.rate_limit_ingest_bytes_per_minute
        self._ingest = (
            Bucket(
                "ingest_bytes",
                per_minute / 60,
                float(per_minute),
                f"{per_minute} bytes of documents per minute (GATEWAY_RATE_LIMIT_INGEST_BYTES_PER_MINUTE)",
            )
            if per_minute > 0
            else None
        )
        self._ask_cap = config.ask_concurrency_per_tenant
        self._lease_seconds = config.ask_lease_seconds
        # Per bucket key: tokens, when they were counted, and when the bucket is full again (then it can go).
        self._local_buckets: dict[str, tuple[float, float, float]] = {}
        self._local_slots: dict[str, int] = {}
        self._redis_retry_at = 0.0
        self._shared = True
        self._scripts: dict[str, Any] = {}

    # Redis, and what happens when it fails.

    def _redis(self) -> aioredis.Redis | None:
        """The client to use now, or None while limits are kept locally."""
        if time.monotonic() < self._redis_retry_at:
            return None
        return self._deps.redis

    def _redis_failed(self, exc: Exception) -> None:
        if self._shared:
            log.warning("Redis failed (%s); limits are kept per replica until it answers again", exc)
        self._shared = False
        self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS

    def _redis_answered(self) -> None:
        if not self._shared:
            log.info("Redis answers again; limits are shared by the replicas again")
        self._shared = True

    async def _script(self, script: str, key: str, *args: Any) -> Any:
        """Runs `script` on `key` in Redis; None when Redis is not to be used or failed (the caller goes local)."""
        client = self._redis()
        if client is None:
            return None
        try:
            # EVALSHA, and EVAL on NOSCRIPT (the script cache is empty after a Redis restart).
            registered = self._scripts.get(script)
            if registered is None:
                registered = self._scripts[script] = client.register_script(script)
            result = await registered(keys=[key], args=list(args), client=client)
        except (aioredis.RedisError, OSError) as exc:
            self._redis_failed(exc)
            return None
        self._redis_answered()
        return result

    # Token buckets.

    def _take_locally(self, key: str, bucket: Bucket, cost: float) -> float:
        now = time.monotonic()
        if len(self._local_buckets) > _MAX_LOCAL_BUCKETS:
            # A bucket that has refilled is the same as a new one: forget it.
            self._local_buckets = {k: v for k, v in self._local_buckets.items() if v[2] > now}
        tokens, at, _ = self._local_buckets.get(key, (bucket.capacity, now, now))
        tokens = min(bucket.capacity, tokens + (now - at) * bucket.rate)
        need = min(cost, bucket.capacity)
        wait = (need - tokens) / bucket.rate if tokens < need else 0.0
        if not wait:
            tokens -= cost
        self._local_buckets[key] = (tokens, now, now + (bucket.capacity - tokens) / bucket.rate)
        return wait

    async def _take(self, bucket: Bucket, principal: Principal, cost: float) -> None:
        """Takes `cost` tokens from the principal's `bucket`, or raises ResourceExhausted with the wait."""
        key = f"{_PREFIX}:{bucket.name}:{digest(principal.tenant, principal.credential_id)}"
        result = await self._script(_TAKE, key, repr(bucket.rate), repr(bucket.capacity), repr(cost))
        if result is None:
            wait = self._take_locally(key, bucket, cost)
        else:
            wait = 0.0 if int(result[0]) == 1 else float(result[1])
        if wait > 0:
            RATE_LIMITED.labels(bucket.name).inc()
            raise ResourceExhausted(
                f"this credential has used up its limit of {bucket.description}; retry in {wait:.2f} s",
                reason=f"RATE_LIMITED_{bucket.name.upper()}",
                retry_after=wait,
            )

    async def check_rate(self, principal: Principal, rate_class: RateClass) -> None:
        """Counts one call of `rate_class` by the principal's credential; ResourceExhausted over the limit."""
        bucket = self._rates[rate_class]
        if bucket is not None:
            await self._take(bucket, principal, 1.0)

    async def charge_ingest_bytes(self, principal: Principal, size: int) -> None:
        """Counts `size` bytes of documents sent by the principal's credential; ResourceExhausted over the limit."""
        if self._ingest is not None and size > 0:
            await self._take(self._ingest, principal, float(size))

    # Ask slots.

    @asynccontextmanager
    async def ask_slot(self, principal: Principal) -> AsyncIterator[None]:
        """Holds one of the tenant's Ask slots while the block runs; ResourceExhausted when all are taken."""
        if self._ask_cap <= 0:
            yield
            return
        key = ask_slots_key(principal.tenant)
        lease = uuid.uuid4().hex
        acquired = await self._script(_ACQUIRE, key, self._ask_cap, repr(self._lease_seconds), lease)
        shared = acquired is not None
        if not shared:
            acquired = self._local_slots.get(key, 0) < self._ask_cap
        if not acquired:
            RATE_LIMITED.labels("ask_concurrency").inc()
            raise ResourceExhausted(
                f"your tenant already has {self._ask_cap} Ask calls in progress, its limit "
                f"(GATEWAY_ASK_CONCURRENCY_PER_TENANT); retry when one has finished",
                reason="RATE_LIMITED_ASK_CONCURRENCY",
                retry_after=ASK_RETRY_SECONDS,
            )
        if shared:
            renewer = asyncio.create_task(self._renew(key, lease))
        else:
            self._local_slots[key] = self._local_slots.get(key, 0) + 1
        try:
            yield
        finally:
            if shared:
                renewer.cancel()
                # Shielded: a cancelled call must still give its slot back.
                await asyncio.shield(self._release(key, lease))
            else:
                self._local_slots[key] -= 1
                if not self._local_slots[key]:
                    del self._local_slots[key]

    async def _renew(self, key: str, lease: str) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            await self._script(_RENEW, key, repr(self._lease_seconds), lease)

    async def _release(self, key: str, lease: str) -> None:
        client = self._deps.redis
        if client is None:
            return
        try:
            await client.zrem(key, lease)
        except (aioredis.RedisError, OSError) as exc:
            # The lease runs out by itself.
            self._redis_failed(exc)


def content_bytes(request: Any) -> int:
    """The document content bytes of an IngestDocuments, CreateIngestJob or UploadIngestDocuments message."""
    if isinstance(request, gateway_service_pb2.UploadIngestDocumentsRequest):
        return len(request.document.content)
    if isinstance(
        request, gateway_service_pb2.IngestDocumentsRequest | gateway_service_pb2.CreateIngestJobRequest
    ):
        return sum(len(document.content) for document in request.documents)
    return 0  # an undecodable request: the handler refuses it


class LimitsInterceptor(PolicyInterceptor):
    """Applies `Limits` to every call of a public method: its rate class, its document bytes, its Ask slot.

    Install it after the authentication interceptor, which binds the caller it reads.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits

    @classmethod
    def from_config(cls, config: GatewayConfig, deps: RedisHolder) -> LimitsInterceptor:
        """The interceptor for the settings in `config`, sharing its counters through `deps.redis`."""
        return cls(Limits(config, deps))

    @asynccontextmanager
    async def around(self, call: Call) -> AsyncIterator[None]:
        method = call.path.rpartition("/")[2]
        await self.limits.check_rate(call.principal, call.policy.rate_class)
        if method in _INGEST_METHODS:
            if method == "UploadIngestDocuments":
                call.request = self._charged(call.principal, call.request)
            else:
                await self.limits.charge_ingest_bytes(call.principal, content_bytes(call.request))
        if method in _ASK_METHODS:
            async with self.limits.ask_slot(call.principal):
                yield
        else:
            yield

    async def _charged(self, principal: Principal, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            await self.limits.charge_ingest_bytes(principal, content_bytes(request))
            yield request
