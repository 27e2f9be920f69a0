"""The command line's conversations: `ragline chat` (an interactive session, answers streamed as they are
written) and `ragline conversations list|show|delete`; also the streamed answer `ragline ask` prints."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from ragline.client import RaglineClient
from ragline.v1 import common_pb2, conversation_pb2, gateway_service_pb2

_REWRITES = {
    conversation_pb2.REWRITE_METHOD_MODEL: "rewritten by the model",
    conversation_pb2.REWRITE_METHOD_FALLBACK: "previous question's key words carried over",
}
_QUIT = {"exit", "quit", ":q"}


# `--mode` values: how the gateway answers (its GATEWAY_ANSWER_MODE when not given).
ANSWER_MODES = {
    "": common_pb2.ANSWER_MODE_UNSPECIFIED,
    "generative": common_pb2.ANSWER_MODE_GENERATIVE,
    "extractive": common_pb2.ANSWER_MODE_EXTRACTIVE,
    "auto": common_pb2.ANSWER_MODE_AUTO,
}


def add_mode_option(command: argparse.ArgumentParser) -> None:
    """Adds `--mode` (generative, extractive or auto) to an asking command."""
    command.add_argument(
        "--mode",
        choices=[name for name in ANSWER_MODES if name],
        default="",
        help="generative: the model writes the answer; extractive: the passages' best-matching sentence, "
        "no model; auto: the gateway chooses (default: the gateway's GATEWAY_ANSWER_MODE)",
    )


async def stream_answer(
    client: RaglineClient,
    question: str,
    args: argparse.Namespace,
    conversation_id: str = "",
    max_tokens: int = 0,
) -> gateway_service_pb2.AskResponse | None:
    """Prints the answer to `question` as it is written, then its sources; returns it (None if the stream
    ended early, which is reported)."""
    reply = None
    events = client.ask_stream(
        question,
        collection=args.collection,
        top_k=args.top_k,
        conversation_id=conversation_id,
        max_tokens=max_tokens,
        answer_mode=ANSWER_MODES[args.mode],
    )
    async for event in events:
        if event.HasField("delta"):
            print(event.delta, end="", flush=True)
        elif event.HasField("final"):
            reply = event.final
    print()
    if reply is None:
        print("error: the answer stream ended early", file=sys.stderr)
        return None
    if reply.citations:
        print("\nSources:")
        for citation in reply.citations:
            snippet = " ".join(citation.snippet.split())[:100]
            print(f"  [{citation.number}] {citation.document_id} (chunk {citation.chunk_id}): {snippet}")
    return reply


async def chat(args: argparse.Namespace) -> int:
    """Asks each line read as the next turn of one conversation until end of input or `exit`."""
    conversation_id = args.conversation or str(uuid.uuid4())
    print(
        f"conversation {conversation_id} (continue it later with --conversation {conversation_id}); "
        "end with Ctrl-D or exit",
        file=sys.stderr,
    )
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        while True:
            try:
                question = (await asyncio.to_thread(input, "> ")).strip()
            except EOFError:
                print(file=sys.stderr)
                return 0
            if question.lower() in _QUIT:
                return 0
            if (
                question
                and await stream_answer(client, question, args, conversation_id, args.max_tokens) is None
            ):
                return 1
            print()


async def conversations(args: argparse.Namespace) -> int:
    """Lists the conversations, shows one with its turns, or deletes one."""
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        if args.conversations_command == "show":
            found = await client.get_conversation(args.conversation_id)
            for turn in found.turns:
                asked = turn.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
                print(f"[{turn.index}] {asked}  {turn.collection}\nQ: {turn.question}")
                if turn.standalone_question != turn.question:
                    how = _REWRITES.get(turn.rewrite_method, "rewritten")
                    print(f"   searched as: {turn.standalone_question} ({how})")
                print(f"A: {turn.answer}\n")
        elif args.conversations_command == "delete":
            turns = await client.delete_conversation(args.conversation_id)
            print(f"conversation {args.conversation_id} deleted with its {turns} turns")
        else:
            await _list(client, args.limit)
    return 0


async def _list(client: RaglineClient, limit: int) -> None:
    shown = 0
    token = ""
    while shown < limit:
        page = await client.list_conversations(page_size=min(limit - shown, 100), page_token=token)
        for conversation in page.conversations:
            updated = conversation.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            expires = conversation.expire_time.ToDatetime().strftime("%Y-%m-%d")
            print(
                f"{updated}  {conversation.conversation_id}  {conversation.turn_count} turns  (kept until {expires})"
            )
        shown += len(page.conversations)
        token = page.next_page_token
        if not token:
            break
    if not shown:
        print("no conversations")


def add_commands(commands: Any) -> None:
    """Adds `chat` and `conversations` to the command line's subcommands."""
    chat_command = commands.add_parser(
        "chat",
        help="ask questions one after another in a conversation; follow-ups may say 'it' or 'and ...?'",
    )
    chat_command.add_argument(
        "--conversation", default="", help="continue this conversation (default: a new one)"
    )
    chat_command.add_argument("--top-k", type=int, default=0, help="passages to answer from")
    add_mode_option(chat_command)
    chat_command.add_argument(
        "--max-tokens", type=int, default=0, help="longest answer in tokens (default: the generator's)"
    )
    listing = commands.add_parser("conversations", help="list conversations, or show or delete one")
    actions = listing.add_subparsers(dest="conversations_command", required=True)
    listed = actions.add_parser("list", help="list conversations, most recently updated first")
    listed.add_argument("--limit", type=int, default=20, help="conversations to list")
    show = actions.add_parser("show", help="show a conversation's turns")
    show.add_argument("conversation_id")
    delete = actions.add_parser("delete", help="delete a conversation and its turns")
    delete.add_argument("conversation_id")
