"""The retriever's conversation store: turns appended in order, read back, listed and deleted per tenant, and
expired conversations invisible at once and purged soon after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from ragline.v1 import conversation_pb2 as conv
from ragline.v1 import conversation_store_service_pb2 as pb
from ragline.v1 import conversation_store_service_pb2_grpc as pb_grpc
from ragline_retriever.paging import encode_page_token, listing_scope

pytestmark = pytest.mark.integration

TTL_SECONDS = 2  # RETRIEVER_CONVERSATION_TTL_SECONDS of the short_ttl_retriever fixture


@pytest.fixture(scope="session")
def store(channel: grpc.aio.Channel) -> pb_grpc.ConversationStoreServiceStub:
    return pb_grpc.ConversationStoreServiceStub(channel)


def turn(question: str, answer: str = "An answer [1].", standalone: str = "") -> conv.Turn:
    return conv.Turn(
        question=question,
        standalone_question=standalone or question,
        rewrite_method=conv.REWRITE_METHOD_NONE,
        answer=answer,
        collection="default",
        cited_document_ids=["doc-1"],
    )


async def append(
    store: pb_grpc.ConversationStoreServiceStub, tenant: str, conversation_id: str, question: str
) -> pb.AppendStoredTurnResponse:
    return await store.AppendStoredTurn(
        pb.AppendStoredTurnRequest(tenant=tenant, conversation_id=conversation_id, turn=turn(question))
    )


async def refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()
    return raised.value.details() or ""


async def test_turns_are_numbered_in_order_and_read_back_oldest_first(
    store: pb_grpc.ConversationStoreServiceStub,
) -> None:
    first = await append(store, "acme", "c-order", "Where is the Eiffel Tower?")
    assert first.turn.index == 1 and first.conversation.turn_count == 1
    assert first.conversation.expire_time.ToDatetime() > first.conversation.update_time.ToDatetime()
    await append(store, "acme", "c-order", "How tall is it?")
    third = await append(store, "acme", "c-order", "Who built it?")
    assert third.turn.index == 3 and third.conversation.turn_count == 3
    assert third.conversation.expire_time.ToDatetime() > first.conversation.expire_time.ToDatetime()
    whole = await store.GetStoredConversation(
        pb.GetStoredConversationRequest(tenant="acme", conversation_id="c-order")
    )
    assert [t.question for t in whole.turns] == [
        "Where is the Eiffel Tower?",
        "How tall is it?",
        "Who built it?",
    ]
    assert [t.index for t in whole.turns] == [1, 2, 3]
    assert list(whole.turns[0].cited_document_ids) == ["doc-1"]
    last = await store.GetStoredConversation(
        pb.GetStoredConversationRequest(tenant="acme", conversation_id="c-order", last_turns=2)
    )
    assert [t.index for t in last.turns] == [2, 3]


async def test_concurrent_appends_to_one_conversation_each_get_their_own_index(
    store: pb_grpc.ConversationStoreServiceStub,
) -> None:
    replies = await asyncio.gather(*(append(store, "acme", "c-race", f"question {i}") for i in range(8)))
    assert sorted(r.turn.index for r in replies) == list(range(1, 9))


async def test_a_conversation_is_confined_to_its_tenant(store: pb_grpc.ConversationStoreServiceStub) -> None:
    await append(store, "tenant-a", "shared-id", "A's question")
    await append(store, "tenant-b", "shared-id", "B's question")
    a = await store.GetStoredConversation(
        pb.GetStoredConversationRequest(tenant="tenant-a", conversation_id="shared-id")
    )
    assert [t.question for t in a.turns] == ["A's question"]
    await refused(
        store.GetStoredConversation(
            pb.GetStoredConversationRequest(tenant="tenant-c", conversation_id="shared-id")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        store.DeleteStoredConversation(
            pb.DeleteStoredConversationRequest(tenant="tenant-c", conversation_id="shared-id")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    deleted = await store.DeleteStoredConversation(
        pb.DeleteStoredConversationRequest(tenant="tenant-b", conversation_id="shared-id")
    )
    assert deleted.deleted_turns == 1
    await refused(
        store.GetStoredConversation(
            pb.GetStoredConversationRequest(tenant="tenant-b", conversation_id="shared-id")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    # The other tenant's conversation of the same id is untouched.
    again = await store.GetStoredConversation(
        pb.GetStoredConversationRequest(tenant="tenant-a", conversation_id="shared-id")
    )
    assert again.conversation.turn_count == 1


async def test_conversations_are_listed_most_recent_first_a_page_at_a_time(
    store: pb_grpc.ConversationStoreServiceStub,
) -> None:
    for index in range(5):
        await append(store, "lister", f"c-{index}", "a question")
    await append(store, "lister", "c-1", "a later question")
    await append(store, "someone-else", "c-9", "not theirs")
    seen: list[str] = []
    token = ""
    while True:
        page = await store.ListStoredConversations(
            pb.ListStoredConversationsRequest(tenant="lister", page_size=2, page_token=token)
        )
        seen += [c.conversation_id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["c-1", "c-4", "c-3", "c-2", "c-0"]
    elsewhere = await refused(
        store.ListStoredConversations(
            pb.ListStoredConversationsRequest(tenant="intruder", page_token=lister_page_token())
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "lister" not in elsewhere


def lister_page_token() -> str:
    """A next_page_token of the tenant `lister`'s listing, made as the store makes them."""
    return encode_page_token(listing_scope("conversations", "lister"), "2026-01-01T00:00:00+00:00 c-3")


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.AppendStoredTurnRequest(tenant="acme", conversation_id="bad id", turn=turn("q")),
            "conversation_id",
        ),
        (
            pb.AppendStoredTurnRequest(tenant="acme", conversation_id="x" * 129, turn=turn("q")),
            "conversation_id",
        ),
        (pb.AppendStoredTurnRequest(tenant="", conversation_id="ok", turn=turn("q")), "tenant"),
        (pb.AppendStoredTurnRequest(tenant="acme", conversation_id="ok", turn=turn(" ")), "turn.question"),
        (
            pb.AppendStoredTurnRequest(
                tenant="acme", conversation_id="ok", turn=conv.Turn(question="q", standalone_question="q")
            ),
            "turn.collection",
        ),
    ],
)
async def test_a_bad_turn_is_invalid_argument_naming_its_field(
    store: pb_grpc.ConversationStoreServiceStub, request_: pb.AppendStoredTurnRequest, field: str
) -> None:
    details = await refused(store.AppendStoredTurn(request_), grpc.StatusCode.INVALID_ARGUMENT)
    assert field in details


@pytest.fixture
async def short_ttl_store(short_ttl_retriever: str) -> AsyncIterator[pb_grpc.ConversationStoreServiceStub]:
    async with grpc.aio.insecure_channel(short_ttl_retriever) as channel:
        yield pb_grpc.ConversationStoreServiceStub(channel)


async def test_an_expired_conversation_is_gone_at_once_then_purged_and_its_id_starts_afresh(
    short_ttl_store: pb_grpc.ConversationStoreServiceStub, short_ttl_database_url: str
) -> None:
    store = short_ttl_store
    await append(store, "acme", "fading", "first")
    await append(store, "acme", "kept", "first")
    await asyncio.sleep(TTL_SECONDS * 0.6)
    # A new turn pushes the expiry back.
    await append(store, "acme", "kept", "second")
    await asyncio.sleep(TTL_SECONDS * 0.6)
    await refused(
        store.GetStoredConversation(pb.GetStoredConversationRequest(tenant="acme", conversation_id="fading")),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await store.ListStoredConversations(pb.ListStoredConversationsRequest(tenant="acme"))
    assert [c.conversation_id for c in listed.conversations] == ["kept"]
    # The readiness probe purges the rows within its interval (1 s here) plus its own period (2 s).
    conn = await asyncpg.connect(short_ttl_database_url)
    try:
        for _ in range(50):
            rows = await conn.fetchval(
                "SELECT count(*) FROM conversation_turns WHERE conversation_id = 'fading'"
            )
            if rows == 0:
                break
            await asyncio.sleep(0.2)
        assert rows == 0
        assert await conn.fetchval("SELECT count(*) FROM conversations WHERE conversation_id = 'fading'") == 0
    finally:
        await conn.close()
    restarted = await append(store, "acme", "fading", "again")
    assert restarted.turn.index == 1
