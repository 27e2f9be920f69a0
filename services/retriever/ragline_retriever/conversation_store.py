"""The SQL of conversations: appending a turn, reading, listing and deleting a conversation, purging expired ones.

Plain async functions that take a connection, as in `api_key_store.py`. Every statement names the
tenant, so a gateway bug cannot reach another tenant's conversation. A conversation whose
`expires_at` has passed is invisible to every statement at once (as if deleted) and removed by
`ConversationPurger`, which the retriever's readiness probe runs every few seconds.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import asyncpg

from ragline.errors import NotFound
from ragline.v1 import conversation_pb2
from ragline_retriever.database import Database, PooledConnection

log = logging.getLogger(__name__)

_CONVERSATION = "conversation_id, turn_count, created_at, updated_at, expires_at"
_TURN = "turn_index, question, standalone_question, rewrite_method, answer, collection, cited_document_ids, created_at"
# Expired conversations deleted per statement, so that a purge never holds many locks for long.
PURGE_BATCH = 1000


def conversation_pb(row: asyncpg.Record) -> conversation_pb2.Conversation:
    """A row of `conversations` as the API's Conversation."""
    conversation = conversation_pb2.Conversation(
        conversation_id=row["conversation_id"], turn_count=row["turn_count"]
    )
    conversation.create_time.FromDatetime(row["created_at"])
    conversation.update_time.FromDatetime(row["updated_at"])
    conversation.expire_time.FromDatetime(row["expires_at"])
    return conversation


def turn_pb(row: asyncpg.Record) -> conversation_pb2.Turn:
    """A row of `conversation_turns` as the API's Turn."""
    turn = conversation_pb2.Turn(
        index=row["turn_index"],
        question=row["question"],
        standalone_question=row["standalone_question"],
        rewrite_method=row["rewrite_method"],
        answer=row["answer"],
        collection=row["collection"],
        cited_document_ids=row["cited_document_ids"],
    )
    turn.create_time.FromDatetime(row["created_at"])
    return turn


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(
        f"conversation {conversation_id!r} does not exist (or has expired)", field="conversation_id"
    )


async def append_turn(
    conn: PooledConnection,
    tenant: str,
    conversation_id: str,
    turn: conversation_pb2.Turn,
    ttl_seconds: float,
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """Adds `turn` as the conversation's next one, creating the conversation (again, once expired) at its
    first; its expiry moves to `ttl_seconds` from now. Returns the conversation's and the turn's rows."""
    async with conn.transaction():
        # An expired conversation is gone, even if the purge has not deleted it yet: this id starts afresh.
        await conn.execute(
            "DELETE FROM conversations WHERE tenant = $1 AND conversation_id = $2"
            " AND expires_at <= clock_timestamp()",
            tenant,
            conversation_id,
        )
        # The row lock taken here orders concurrent appends to one conversation: each gets its own index.
        conversation = await conn.fetchrow(
            "INSERT INTO conversations (tenant, conversation_id, turn_count, expires_at)"
            " VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))"
            " ON CONFLICT (tenant, conversation_id) DO UPDATE SET turn_count = conversations.turn_count + 1,"
            " updated_at = clock_timestamp(), expires_at = EXCLUDED.expires_at"
            f" RETURNING {_CONVERSATION}",
            tenant,
            conversation_id,
            ttl_seconds,
        )
        assert conversation is not None  # INSERT ... RETURNING returns the row or raises
        stored = await conn.fetchrow(
            "INSERT INTO conversation_turns (tenant, conversation_id, turn_index, question, standalone_question,"
            " rewrite_method, answer, collection, cited_document_ids)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_TURN}",
            tenant,
            conversation_id,
            conversation["turn_count"],
            turn.question,
            turn.standalone_question,
            turn.rewrite_method,
            turn.answer,
            turn.collection,
            list(turn.cited_document_ids),
        )
        assert stored is not None
    return conversation, stored


async def get_conversation(
    conn: PooledConnection, tenant: str, conversation_id: str, last_turns: int
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """The tenant's live conversation and its last `last_turns` turns (0: all), oldest first; NOT_FOUND if none."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        conversation = await conn.fetchrow(
            f"SELECT {_CONVERSATION} FROM conversations"
            " WHERE tenant = $1 AND conversation_id = $2 AND expires_at > clock_timestamp()",
            tenant,
            conversation_id,
        )
        if conversation is None:
            raise _not_found(conversation_id)
        turns = await conn.fetch(
            f"SELECT {_TURN} FROM conversation_turns WHERE tenant = $1 AND conversation_id = $2"
            " ORDER BY turn_index DESC LIMIT $3",
            tenant,
            conversation_id,
            last_turns or None,
        )
    return conversation, turns[::-1]


async def list_conversations(
    conn: PooledConnection, tenant: str, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` of the tenant's live conversations, most recently updated first, after the
    (updated_at, conversation_id) `after`."""
    if after is None:
        return await conn.fetch(
            f"SELECT {_CONVERSATION} FROM conversations WHERE tenant = $1 AND expires_at > clock_timestamp()"
            " ORDER BY updated_at DESC, conversation_id DESC LIMIT $2",
            tenant,
            limit,
        )
    return await conn.fetch(
        f"SELECT {_CONVERSATION} FROM conversations WHERE tenant = $1 AND expires_at > clock_timestamp()"
        " AND (updated_at, conversation_id) < ($2, $3) ORDER BY updated_at DESC, conversation_id DESC LIMIT $4",
        tenant,
        after[0],
        after[1],
        limit,
    )


async def delete_conversation(conn: PooledConnection, tenant: str, conversation_id: str) -> int:
    """Deletes the tenant's live conversation and its turns; returns how many turns; NOT_FOUND if none."""
    turns = await conn.fetchval(
        "DELETE FROM conversations WHERE tenant = $1 AND conversation_id = $2"
        " AND expires_at > clock_timestamp() RETURNING turn_count",
        tenant,
        conversation_id,
    )
    if turns is None:
        raise _not_found(conversation_id)
    return int(turns)


async def purge_expired(conn: PooledConnection) -> int:
    """Deletes every expired conversation with its turns, PURGE_BATCH at a time; returns how many."""
    purged = 0
    while True:
        deleted: int = await conn.fetchval(
            "WITH gone AS (DELETE FROM conversations WHERE (tenant, conversation_id) IN ("
            "SELECT tenant, conversation_id FROM conversations WHERE expires_at <= clock_timestamp()"
            " LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING 1) SELECT count(*) FROM gone",
            PURGE_BATCH,
        )
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged


class ConversationPurger:
    """Runs `purge_expired` at most once per interval, from the retriever's readiness probe."""

    def __init__(self, database: Database, interval_seconds: float) -> None:
        self._db = database
        self._interval = interval_seconds
        self._next = 0.0

    async def run_if_due(self) -> None:
        """Purges the expired conversations when the interval has passed since the last purge."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        async with self._db.connection() as conn:
            purged = await purge_expired(conn)
        if purged:
            log.info("purged %d expired conversations", purged)
