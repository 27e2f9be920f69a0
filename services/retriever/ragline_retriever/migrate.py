"""Brings the database schema up to date from the numbered SQL files in `migrations/`.

Every replica runs this at start. The whole run happens in one transaction that first takes a
transaction-level advisory lock, so replicas starting together apply each file exactly once
(the others wait, then find nothing pending), and a file that fails leaves no trace.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)

# Any constant works as long as nothing else in the database uses it: "ragline" in ASCII.
MIGRATION_LOCK_ID = 0x7261676C696E65

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the number its name starts with), name and statements."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations in version order."""
    found = []
    for entry in resources.files("ragline_retriever").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Applies the pending migrations on `conn`; returns the versions it applied (empty if none)."""
    applied_now: list[int] = []
    # A migration's WARNING (say, a step a role without the rights had to skip) goes to the log.
    conn.add_log_listener(_log_notice)
    try:
        await _apply(conn, applied_now)
    finally:
        conn.remove_log_listener(_log_notice)
    return applied_now


def _log_notice(
    conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any], message: asyncpg.PostgresLogMessage
) -> None:
    if message.severity in ("WARNING", "ERROR"):
        log.warning("migration: %s", message.message)


async def _apply(conn: asyncpg.Connection, applied_now: list[int]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS ragline_schema_migrations ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM ragline_schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            log.info("applying migration %s", migration.name)
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO ragline_schema_migrations (version) VALUES ($1)", migration.version
            )
            applied_now.append(migration.version)
