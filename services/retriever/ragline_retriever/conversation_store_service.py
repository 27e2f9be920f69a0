"""The `ragline.v1.ConversationStoreService` servicer: conversations, as thin handlers over `conversation_store.py`.

It serves in the retriever's process beside RetrieverService, because the retriever owns every SQL
statement. It is internal: the gateways store each turn of an Ask that names a conversation, read a
conversation's last turns before rewriting a follow-up, and serve the public conversation RPCs.
"""

from __future__ import annotations

from datetime import datetime

import grpc

from ragline.errors import InvalidArgument
from ragline.v1 import conversation_pb2
from ragline.v1 import conversation_store_service_pb2 as pb
from ragline.v1 import conversation_store_service_pb2_grpc as pb_grpc
from ragline.validation import (
    MAX_QUERY_CHARS,
    check_collection_name,
    check_conversation_id,
    check_document_id,
    check_enum,
    check_tenant,
    check_text,
)
from ragline_retriever import conversation_store
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.database import Database
from ragline_retriever.paging import decode_page_token, listing_scope, next_page_token, page_size

# Longest answer a turn keeps: far beyond any model's max_tokens, short of a runaway caller.
MAX_ANSWER_CHARS = 262_144
# Most cited documents a turn keeps: an answer cites at most the passages it was given.
MAX_CITED_DOCUMENTS = 1000
MAX_LAST_TURNS = 1000


def _check_turn(turn: conversation_pb2.Turn) -> None:
    """INVALID_ARGUMENT naming the field when a turn to store is not one."""
    for field, value in (
        ("turn.question", turn.question),
        ("turn.standalone_question", turn.standalone_question),
    ):
        if not value.strip():
            raise InvalidArgument(f"{field} is empty", field=field)
        check_text(value, field, MAX_QUERY_CHARS)
    check_enum(turn.rewrite_method, conversation_pb2.RewriteMethod, "turn.rewrite_method")
    check_text(turn.answer, "turn.answer", MAX_ANSWER_CHARS)
    check_collection_name(turn.collection, "turn.collection")
    if len(turn.cited_document_ids) > MAX_CITED_DOCUMENTS:
        raise InvalidArgument(
            f"turn.cited_document_ids holds {len(turn.cited_document_ids)} ids; at most {MAX_CITED_DOCUMENTS}",
            field="turn.cited_document_ids",
        )
    for index, document_id in enumerate(turn.cited_document_ids):
        check_document_id(document_id, f"turn.cited_document_ids[{index}]")


class ConversationStoreServicer(pb_grpc.ConversationStoreServiceServicer):
    """Serves the conversations from the retriever's database."""

    def __init__(self, config: RetrieverConfig, database: Database) -> None:
        self._config = config
        self._db = database

    async def AppendStoredTurn(
        self, request: pb.AppendStoredTurnRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendStoredTurnResponse:
        tenant = check_tenant(request.tenant)
        conversation_id = check_conversation_id(request.conversation_id, "conversation_id")
        _check_turn(request.turn)
        async with self._db.connection() as conn:
            conversation, turn = await conversation_store.append_turn(
                conn, tenant, conversation_id, request.turn, self._config.conversation_ttl_seconds
            )
        return pb.AppendStoredTurnResponse(
            conversation=conversation_store.conversation_pb(conversation),
            turn=conversation_store.turn_pb(turn),
        )

    async def GetStoredConversation(
        self, request: pb.GetStoredConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStoredConversationResponse:
        tenant = check_tenant(request.tenant)
        conversation_id = check_conversation_id(request.conversation_id, "conversation_id")
        if not 0 <= request.last_turns <= MAX_LAST_TURNS:
            raise InvalidArgument(
                f"last_turns must be from 0 (every turn) to {MAX_LAST_TURNS}", field="last_turns"
            )
        async with self._db.connection() as conn:
            conversation, turns = await conversation_store.get_conversation(
                conn, tenant, conversation_id, request.last_turns
            )
        return pb.GetStoredConversationResponse(
            conversation=conversation_store.conversation_pb(conversation),
            turns=[conversation_store.turn_pb(row) for row in turns],
        )

    async def ListStoredConversations(
        self, request: pb.ListStoredConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStoredConversationsResponse:
        tenant = check_tenant(request.tenant)
        size = page_size(request.page_size)
        scope = listing_scope("conversations", tenant)
        after_key = decode_page_token(request.page_token, scope)
        after = None
        if after_key:
            updated, _, conversation_id = after_key.partition(" ")
            try:
                after = (
                    datetime.fromisoformat(updated),
                    check_conversation_id(conversation_id, "page_token"),
                )
            except (ValueError, InvalidArgument):
                raise InvalidArgument(
                    "page_token is not a next_page_token of this listing", field="page_token"
                ) from None
        async with self._db.connection() as conn:
            rows = await conversation_store.list_conversations(conn, tenant, after, size + 1)
        return pb.ListStoredConversationsResponse(
            conversations=[conversation_store.conversation_pb(row) for row in rows[:size]],
            next_page_token=next_page_token(
                scope, rows, size, lambda row: f"{row['updated_at'].isoformat()} {row['conversation_id']}"
            ),
        )

    async def DeleteStoredConversation(
        self, request: pb.DeleteStoredConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteStoredConversationResponse:
        tenant = check_tenant(request.tenant)
        conversation_id = check_conversation_id(request.conversation_id, "conversation_id")
        async with self._db.connection() as conn:
            turns = await conversation_store.delete_conversation(conn, tenant, conversation_id)
        return pb.DeleteStoredConversationResponse(deleted_turns=turns)
