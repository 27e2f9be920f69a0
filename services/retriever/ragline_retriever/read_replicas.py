"""PostgreSQL streaming replicas that searches may read from (`RETRIEVER_READ_DATABASE_URLS`).

Each replica has its own pool. A checker task measures, every `RETRIEVER_READ_CHECK_INTERVAL_SECONDS`,
whether each replica answers and how far its replay lags the primary, and keeps in rotation only
those that answer, are still standbys, and lag by at most `RETRIEVER_READ_MAX_LAG_SECONDS`; a replica
taken out comes back by itself at the first check that finds it well again. Searches take the
replicas in rotation in turn (`pick`); a search that fails on one takes it out at once and goes to
the primary, so a replica that dies costs no search a failure.

The lag is measured by LSN, not by replay timestamps: the checker samples the primary's WAL
position each round and remembers when it saw each; a replica's lag is the time since the newest
sample its replay position has reached. (`now() - pg_last_xact_replay_timestamp()` would count the
idle time before a write as lag, and depends on two servers' clocks.)

The lag bound only keeps a replica that is far behind from being asked in vain: freshness itself
is checked by every search, in the snapshot it reads (`searcher.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from prometheus_client import Gauge

from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import (
    UNAVAILABLE_ERRORS,
    Database,
    PooledConnection,
    create_pool,
    describe_error,
    describe_server,
)

log = logging.getLogger(__name__)

LAG_SECONDS = Gauge(
    "ragline_retriever_read_replica_lag_seconds",
    "How far each read replica's replay lags the primary, at the last check; +Inf while it does not answer.",
    ["replica"],
)
IN_ROTATION = Gauge(
    "ragline_retriever_read_replica_in_rotation",
    "1 while the read replica (by its position in RETRIEVER_READ_DATABASE_URLS) may serve searches, else 0.",
    ["replica"],
)

# Failures of a search on a replica that the primary may not have: the replica is down or going
# away, or recovery cancelled the statement (a conflict with replay, SQLSTATE 40001). A replica killed
# mid-statement can also leave a pooled connection in the middle of its protocol, and its next use
# fails with InternalClientError ("another operation is in progress"): that too is the replica's.
REPLICA_ERRORS: tuple[type[Exception], ...] = (
    *UNAVAILABLE_ERRORS,
    asyncpg.TransactionRollbackError,
    asyncpg.InternalClientError,
)
# What a check may meet: the above, any other error of the server (a replica still starting up),
# and the ValueError of a new connection's set-up while the replica has not replayed the creation
# of the `vector` type yet (a replica made before the primary's first migration).
_CHECK_ERRORS: tuple[type[Exception], ...] = (*REPLICA_ERRORS, asyncpg.PostgresError, ValueError)

_CHECK_SQL = "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn() AS replayed"


@dataclass
class Replica:
    """One read replica: its pool and what the last check found."""

    label: str
    """Its position in RETRIEVER_READ_DATABASE_URLS, from 0: the metrics' label."""
    server: str
    """Its server and database without credentials, for logs."""
    pool: asyncpg.Pool
    in_rotation: bool = False
    lag_seconds: float = math.inf


class ReadReplicas:
    """The replicas of `RETRIEVER_READ_DATABASE_URLS`, those in rotation, and the checker that decides which."""

    def __init__(self, config: RetrieverConfig, primary: Database) -> None:
        self._config = config
        self._primary = primary
        self._replicas: list[Replica] = []
        self._turn = itertools.count()
        # (monotonic time, primary WAL position) of recent checks, oldest first.
        self._primary_positions: deque[tuple[float, int]] = deque()
        self._checker: asyncio.Task[None] | None = None

    @property
    def replicas(self) -> list[Replica]:
        """Every configured replica, in the order of RETRIEVER_READ_DATABASE_URLS."""
        return self._replicas

    async def start(self) -> None:
        """Opens a pool per replica (connecting lazily, so a replica that is down does not stop the
        retriever), checks them once and starts the checker."""
        for index, url in enumerate(self._config.read_urls):
            pool = await create_pool(self._config, url, min_size=0)
            self._replicas.append(Replica(str(index), describe_server(url), pool))
            IN_ROTATION.labels(str(index)).set(0)
            LAG_SECONDS.labels(str(index)).set(math.inf)
        if self._replicas:
            await self.check()
            self._checker = asyncio.create_task(self._check_forever(), name="read-replica-checker")

    def pick(self) -> Replica | None:
        """The next replica in rotation, in turn; None when none is."""
        ready = [replica for replica in self._replicas if replica.in_rotation]
        return ready[next(self._turn) % len(ready)] if ready else None

    def take_out(self, replica: Replica, reason: str) -> None:
        """Takes `replica` out of rotation until a check finds it well again (a search failed on it)."""
        if replica.in_rotation:
            log.warning("read replica %s out of rotation: %s", replica.server, reason)
        self._set(replica, in_rotation=False, lag=replica.lag_seconds)

    @asynccontextmanager
    async def connection(self, replica: Replica) -> AsyncIterator[PooledConnection]:
        """A connection to `replica`; its errors (REPLICA_ERRORS) are the caller's to handle."""
        async with replica.pool.acquire(timeout=self._config.connect_timeout_seconds) as conn:
            yield conn

    async def check(self) -> None:
        """Measures every replica once and puts each in or out of rotation."""
        position = await self._primary_position()
        now = time.monotonic()
        if position is not None:
            self._primary_positions.append((now, position))
        # Samples older than the lag bound (and two rounds) tell nothing a newer one does not.
        horizon = now - self._config.read_max_lag_seconds - 2 * self._config.read_check_interval_seconds
        while len(self._primary_positions) > 1 and self._primary_positions[1][0] < horizon:
            self._primary_positions.popleft()
        await asyncio.gather(*(self._check_one(replica, now) for replica in self._replicas))

    async def stop(self) -> None:
        """Stops the checker and closes the replicas' pools."""
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
            self._checker = None
        for replica in self._replicas:
            try:
                await asyncio.wait_for(replica.pool.close(), timeout=self._config.connect_timeout_seconds)
            except TimeoutError:
                replica.pool.terminate()
        self._replicas.clear()

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.read_check_interval_seconds)
            try:
                await self.check()
            except Exception:  # the checker must outlive any surprise, or replicas would never return
                log.exception("checking the read replicas failed")

    def _timeout(self) -> float:
        return max(self._config.read_check_interval_seconds, 1.0)

    async def _primary_position(self) -> int | None:
        """The primary's current WAL position; None if it cannot be read now."""
        try:
            async with self._primary.connection(timeout=self._timeout()) as conn:
                position: int = await conn.fetchval("SELECT pg_current_wal_lsn()", timeout=self._timeout())
        except Exception as exc:  # an unreadable primary leaves the lags as they were
            log.debug("read replica check: primary position unknown: %s", describe_error(exc))
            return None
        return position

    async def _check_one(self, replica: Replica, now: float) -> None:
        try:
            async with asyncio.timeout(self._timeout()):
                async with self.connection(replica) as conn:
                    row = await conn.fetchrow(_CHECK_SQL)
        except _CHECK_ERRORS as exc:
            if replica.in_rotation:
                log.warning("read replica %s out of rotation: %s", replica.server, describe_error(exc))
            self._set(replica, in_rotation=False, lag=math.inf)
            return
        if row is None or not row["standby"]:
            if replica.in_rotation or math.isfinite(replica.lag_seconds):
                log.warning(
                    "read replica %s out of rotation: it is not a standby (promoted?)", replica.server
                )
            self._set(replica, in_rotation=False, lag=math.inf)
            return
        lag = self._lag(row["replayed"], now, replica.lag_seconds)
        in_rotation = lag <= self._config.read_max_lag_seconds
        if in_rotation != replica.in_rotation:
            log.warning(
                "read replica %s %s rotation (replay lag %.2f s, bound %.2f s)",
                replica.server,
                "back in" if in_rotation else "out of",
                lag,
                self._config.read_max_lag_seconds,
            )
        self._set(replica, in_rotation=in_rotation, lag=lag)

    def _lag(self, replayed: int | None, now: float, previous: float) -> float:
        """The time since the newest primary position `replayed` has reached; `previous` if there is
        no position to compare with (the primary could not be read)."""
        if not self._primary_positions:
            return previous
        if replayed is None:
            return math.inf
        reached = [when for when, position in self._primary_positions if position <= replayed]
        if reached:
            # Caught up with the newest sample: nothing to replay as of this round.
            return 0.0 if reached[-1] == self._primary_positions[-1][0] else now - reached[-1]
        # Behind every sample we kept: at least as old as the oldest.
        return now - self._primary_positions[0][0]

    def _set(self, replica: Replica, *, in_rotation: bool, lag: float) -> None:
        replica.in_rotation = in_rotation
        replica.lag_seconds = lag
        IN_ROTATION.labels(replica.label).set(1 if in_rotation else 0)
        LAG_SECONDS.labels(replica.label).set(lag)
