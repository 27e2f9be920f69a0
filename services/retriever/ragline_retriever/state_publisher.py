"""The retriever's side of `ragline.collection_state`: publishes collections' state for the gateways
and withdraws it after every change, so that a warm query need not ask the retriever anything.

Without a Redis URL it does nothing, and gateways look collections up on every query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from ragline.collection_state import Publication, announce_change
from ragline.v1 import common_pb2

log = logging.getLogger(__name__)

STATE_ANNOUNCEMENTS = Counter(
    "ragline_retriever_state_announcements_total",
    "Changes to a collection announced in Redis (ragline.collection_state), by outcome; a failed one "
    "waits out the state lease before its call answers.",
    ["outcome"],
)
STATE_PUBLICATIONS = Counter(
    "ragline_retriever_state_publications_total",
    "Collection states published in Redis by GetStoredCollection, by outcome (published, changed meanwhile, error).",
    ["outcome"],
)
# After a failed publication, lookups publish nothing for this long (nothing is lost: gateways ask).
PUBLISH_PAUSE_AFTER_FAILURE_SECONDS = 5.0


@dataclass
class Change:
    """Whether a write may have committed a change to its collection, which must then be announced."""

    made: bool = False


class StatePublisher:
    """Publishes and withdraws collections' state in the gateways' Redis (`redis_url`; empty: none)."""

    def __init__(self, redis_url: str, *, lease_seconds: float, timeout_seconds: float) -> None:
        self._lease = lease_seconds
        self._client = (
            aioredis.from_url(
                redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
            )
            if redis_url
            else None
        )
        self._paused_until = 0.0
        self._publishing: set[asyncio.Task[None]] = set()
        # One warning per outage, not one per change.
        self._announcing_fails = False

    async def close(self) -> None:
        """Drops publications still under way (nothing is lost: gateways ask) and closes the Redis connections."""
        for task in list(self._publishing):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()

    @contextlib.asynccontextmanager
    async def changing(self, tenant: str, name: str) -> AsyncIterator[Change]:
        """Announces, when the body is left, a change to `tenant`'s collection `name` that the body
        may have committed (`made`), even if it failed or was cancelled after the commit."""
        change = Change()
        try:
            yield change
        finally:
            if change.made and self._client is not None:
                # Shielded: a caller that gives up must not leave a committed change unannounced.
                await asyncio.shield(self._announce(self._client, tenant, name))

    async def _announce(self, client: aioredis.Redis, tenant: str, name: str) -> None:
        """Withdraws the collection's published state; if Redis cannot be told, waits until it has expired."""
        committed = time.monotonic()
        try:
            await announce_change(client, tenant, name)
        except (RedisError, OSError) as exc:
            STATE_ANNOUNCEMENTS.labels("failed").inc()
            if not self._announcing_fails:
                log.warning(
                    "Redis cannot be told of changes (%s): each change now waits out the %.2f s "
                    "state lease before it answers, until Redis answers again",
                    exc,
                    self._lease,
                )
            self._announcing_fails = True
            await asyncio.sleep(max(0.0, committed + self._lease - time.monotonic()))
        else:
            STATE_ANNOUNCEMENTS.labels("announced").inc()
            if self._announcing_fails:
                log.info("Redis answers again: changes are announced without waiting")
            self._announcing_fails = False

    async def begin(self, tenant: str, name: str) -> Publication | None:
        """A publication of the state of `tenant`'s collection `name`, begun before the state is read; None without Redis,
        or for a while after it failed, so that a Redis that times out does not slow every lookup."""
        if self._client is None or time.monotonic() < self._paused_until:
            return None
        publication = Publication(self._client, tenant, name, self._lease)
        try:
            await publication.begin()
        except (RedisError, OSError):
            self._failed()
            return None
        return publication

    def publish_later(self, publication: Publication, collection: common_pb2.Collection) -> None:
        """Publishes `collection` (read after `publication` began) in the background, after the
        reply: the lease counts from the begin, and the epoch check holds whenever it runs."""
        task = asyncio.create_task(self._publish(publication, collection))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, publication: Publication, collection: common_pb2.Collection) -> None:
        try:
            published = await publication.publish(collection)
        except (RedisError, OSError):
            self._failed()
        else:
            STATE_PUBLICATIONS.labels("published" if published else "changed").inc()

    def _failed(self) -> None:
        STATE_PUBLICATIONS.labels("error").inc()
        self._paused_until = time.monotonic() + PUBLISH_PAUSE_AFTER_FAILURE_SECONDS
