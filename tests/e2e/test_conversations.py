"""Conversations through the whole stack: a follow-up that only makes sense with the first question
retrieves the first question's document, identical follow-ups in two conversations get their own
answers (caches on), and conversations are listed, shown, deleted, confined to their tenant and gone
once expired.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from ragline import api_keys
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.embedded_standby import embedded_url
from ragline.v1 import admin_service_pb2, conversation_pb2, gateway_service_pb2

pytestmark = pytest.mark.integration

COLLECTION = "conversations"
DOCUMENTS = {
    "eiffel.txt": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was built for the 1889 "
    "World's Fair by the company of the engineer Gustave Eiffel. The tower is 330 metres tall.",
    "liberty.txt": "The Statue of Liberty is a copper statue on Liberty Island in New York Harbor. It was "
    "designed by the sculptor Frederic Auguste Bartholdi. The statue is 93 metres tall from the ground to the torch.",
    "bananas.txt": "Bananas are elongated, edible fruits. Ripe bananas are usually yellow and rich in potassium.",
}
FOLLOW_UP = "How tall is it?"
# Short answers: the tests are about retrieval and turns, not prose.
MAX_TOKENS = 24


@pytest.fixture(scope="module")
async def collection(client: RaglineClient) -> str:
    documents = [DocumentToIngest(document_id, text.encode()) for document_id, text in DOCUMENTS.items()]
    await client.ingest(documents, collection=COLLECTION)
    return COLLECTION


async def ask(
    client: RaglineClient, question: str, conversation_id: str = ""
) -> tuple[list[str], gateway_service_pb2.AskResponse]:
    """The document ids of the passages the answer was given, best first, and the answer."""
    passages: list[str] = []
    final = None
    events = client.ask_stream(
        question, collection=COLLECTION, top_k=2, conversation_id=conversation_id, max_tokens=MAX_TOKENS
    )
    async for event in events:
        if event.HasField("passages"):
            passages = [hit.document_id for hit in event.passages.hits]
        elif event.HasField("final"):
            final = event.final
    assert final is not None
    return passages, final


async def test_a_follow_up_retrieves_the_document_its_first_question_was_about(
    client: RaglineClient, collection: str
) -> None:
    # Alone, the follow-up names neither landmark: whichever document retrieval ranks first, one of the
    # two conversations below would get the other's if the conversation were not used.
    for first, expected in (
        ("Where is the Statue of Liberty?", "liberty.txt"),
        ("Where is the Eiffel Tower?", "eiffel.txt"),
    ):
        conversation_id = str(uuid.uuid4())
        passages, _ = await ask(client, first, conversation_id)
        assert passages[0] == expected
        # The same follow-up in each conversation, with the caches on: each gets its own document.
        passages, answer = await ask(client, FOLLOW_UP, conversation_id)
        assert passages[0] == expected, (first, passages)
        assert {"conversation", "rewrite"} <= {stage.stage for stage in answer.stage_timings}
        stored = await client.get_conversation(conversation_id)
        assert [turn.question for turn in stored.turns] == [first, FOLLOW_UP]
        second = stored.turns[1]
        assert second.rewrite_method in (
            conversation_pb2.REWRITE_METHOD_MODEL,
            conversation_pb2.REWRITE_METHOD_FALLBACK,
        )
        name = "Liberty" if expected == "liberty.txt" else "Eiffel"
        assert name in second.standalone_question and second.answer == answer.answer
        assert stored.turns[0].rewrite_method == conversation_pb2.REWRITE_METHOD_NONE
        assert stored.conversation.turn_count == 2


async def test_a_question_without_a_conversation_is_neither_rewritten_nor_stored(
    client: RaglineClient, collection: str
) -> None:
    before = await client.list_conversations(page_size=1000)
    _, answer = await ask(client, "Where is the Statue of Liberty?")
    assert "rewrite" not in {stage.stage for stage in answer.stage_timings}
    after = await client.list_conversations(page_size=1000)
    assert len(after.conversations) == len(before.conversations)


async def test_conversations_are_listed_a_page_at_a_time_shown_and_deleted(
    client: RaglineClient, collection: str
) -> None:
    ids = [f"listed-{uuid.uuid4()}" for _ in range(2)]
    for conversation_id in ids:
        await ask(client, "Where is the Eiffel Tower?", conversation_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await client.list_conversations(page_size=1, page_token=token)
        seen += [c.conversation_id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    # Most recently updated first.
    assert seen.index(ids[1]) < seen.index(ids[0])
    assert await client.delete_conversation(ids[0]) == 1
    for call in (client.get_conversation(ids[0]), client.delete_conversation(ids[0])):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # The id may be used again: a new conversation, whose follow-up has nothing to refer to.
    await ask(client, FOLLOW_UP, ids[0])
    again = await client.get_conversation(ids[0])
    assert [t.index for t in again.turns] == [1]
    assert again.turns[0].rewrite_method == conversation_pb2.REWRITE_METHOD_NONE


@pytest.fixture(scope="module")
async def other_tenant(stack: Stack) -> AsyncIterator[RaglineClient]:
    """An admin of another tenant, with the same documents in its own collection of the same name."""
    _, token = await asyncio.to_thread(
        api_keys.store_new_key, stack["retriever"].address, "other-tenant", admin_service_pb2.ROLE_ADMIN
    )
    async with RaglineClient(stack["gateway"].address, timeout=120, api_key=token) as other:
        documents = [DocumentToIngest(document_id, text.encode()) for document_id, text in DOCUMENTS.items()]
        await other.ingest(documents, collection=COLLECTION)
        yield other


async def test_a_conversation_is_confined_to_its_tenant(
    client: RaglineClient, other_tenant: RaglineClient, collection: str
) -> None:
    conversation_id = f"confined-{uuid.uuid4()}"
    await ask(client, "Where is the Statue of Liberty?", conversation_id)
    for call in (
        other_tenant.get_conversation(conversation_id),
        other_tenant.delete_conversation(conversation_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await other_tenant.list_conversations(page_size=1000)
    assert conversation_id not in {c.conversation_id for c in listed.conversations}
    # The same id in the other tenant is another conversation: its follow-up sees none of the first's turns.
    await ask(other_tenant, FOLLOW_UP, conversation_id)
    theirs = await other_tenant.get_conversation(conversation_id)
    assert [(t.index, t.rewrite_method) for t in theirs.turns] == [(1, conversation_pb2.REWRITE_METHOD_NONE)]
    ours = await client.get_conversation(conversation_id)
    assert [t.question for t in ours.turns] == ["Where is the Statue of Liberty?"]


async def test_an_expired_conversation_is_not_found_and_its_next_question_starts_afresh(
    client: RaglineClient, stack: Stack, collection: str
) -> None:
    conversation_id = f"expiring-{uuid.uuid4()}"
    await ask(client, "Where is the Statue of Liberty?", conversation_id)
    # Its retention period runs out (RETRIEVER_CONVERSATION_TTL_SECONDS is 30 days: moved, not waited for).
    conn = await asyncpg.connect(embedded_url(stack.state / "postgres"))
    try:
        await conn.execute(
            "UPDATE conversations SET expires_at = now() - interval '1 second' WHERE conversation_id = $1",
            conversation_id,
        )
    finally:
        await conn.close()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.get_conversation(conversation_id)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await client.list_conversations(page_size=1000)
    assert conversation_id not in {c.conversation_id for c in listed.conversations}
    await ask(client, FOLLOW_UP, conversation_id)
    fresh = await client.get_conversation(conversation_id)
    assert [t.question for t in fresh.turns] == [FOLLOW_UP]


@pytest.mark.parametrize("conversation_id", ["has space", "x" * 129, "new\nline"])
async def test_a_bad_conversation_id_is_invalid_argument_naming_the_field(
    client: RaglineClient, collection: str, conversation_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.ask("Where is the Eiffel Tower?", collection=COLLECTION, conversation_id=conversation_id)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "conversation_id" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.get_conversation(conversation_id)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def ragline(stack: Stack, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Runs the `ragline` command against the stack, with the admin key of its state folder."""
    env = {
        **os.environ,
        "RAGLINE_GATEWAY_ADDR": stack["gateway"].address,
        "RAGLINE_STATE_DIR": str(stack.state),
    }
    env.pop("RAGLINE_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "ragline.cli", "--collection", COLLECTION, *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ragline_chat_holds_a_conversation_that_ragline_conversations_shows_and_deletes(
    stack: Stack, collection: str
) -> None:
    chat = ragline(
        stack, "chat", "--top-k", "1", stdin=f"Where is the Statue of Liberty?\n{FOLLOW_UP}\nexit\n"
    )
    assert chat.returncode == 0, chat.stderr
    # Both answers cite the statue's document: the follow-up was understood from the first question.
    assert chat.stdout.count("liberty.txt") == 2, chat.stdout
    conversation_id = re.search(r"conversation (\S+) \(continue it", chat.stderr)
    assert conversation_id is not None, chat.stderr
    listed = ragline(stack, "conversations", "list")
    assert f"{conversation_id[1]}  2 turns" in listed.stdout, listed.stdout
    shown = ragline(stack, "conversations", "show", conversation_id[1])
    assert f"Q: {FOLLOW_UP}" in shown.stdout and "searched as:" in shown.stdout and "Liberty" in shown.stdout
    deleted = ragline(stack, "conversations", "delete", conversation_id[1])
    assert deleted.stdout.strip() == f"conversation {conversation_id[1]} deleted with its 2 turns"
    missing = ragline(stack, "conversations", "show", conversation_id[1])
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
