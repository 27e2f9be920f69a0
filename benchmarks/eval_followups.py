"""`make eval-followups`: how well follow-up questions retrieve, raw and made standalone, through the real services.

Starts the four services (`ragline.devstack`, a fresh embedded PostgreSQL and Redis in a temporary
directory) and ingests the 1,299 SQuAD dev paragraphs of `../shared/data/squad-dev`. Each of
FOLLOW_UPS is a two-turn conversation: a first question that names an article's subject, then a
follow-up that only makes sense after it ("How many universities does it have?"), written for one of
the shared SQuAD questions, whose paragraph is the one to find. The follow-up is searched four ways:

- raw: the follow-up as asked, alone;
- fallback: the generator's deterministic fallback (the previous question's key words carried over);
- conversation: AskStream with a conversation_id after the first question: the gateway's rewrite
  (the model's, or the fallback when the model's is unusable), as a user gets it;
- standalone: a question written by hand that says everything (SQuAD's own, with its subject named).

Each ranks the top 5 passages (caches bypassed); the table gives hit@1, hit@5 and MRR@5 of the
follow-up's paragraph, and the JSON the questions each conversation searched with.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from benchmarks.beir import read_jsonl, shared_dir
from benchmarks.report import write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import conversation_pb2
from ragline.v1 import gateway_service_pb2 as gw
from ragline_generator.rewrite import Exchange, fallback

COLLECTION = "squad-dev"
TOP_K = 5
INGEST_BATCH = 50
ANSWER_TOKENS = 32
# (first question, follow-up, the follow-up written as a standalone question, the paragraph that answers it).
FOLLOW_UPS = [
    (
        "What is the population of Jacksonville, Florida?",
        "What is its hottest recorded temperature?",
        "What is Jacksonville's hottest recorded temperature?",
        "Jacksonville,_Florida-17",
    ),
    (
        "Where is Newcastle upon Tyne?",
        "How many universities does it have?",
        "How many universities does Newcastle have?",
        "Newcastle_upon_Tyne-46",
    ),
    (
        "What is Doctor Who about?",
        "In what year was its first audiobook released?",
        "In what year was the first Doctor Who audiobook released?",
        "Doctor_Who-54",
    ),
    (
        "When was Harvard University founded?",
        "Beginning in what year was it on top of the World Reputation Rankings?",
        "Beginning in what year was Harvard on top of the World Reputation Rankings?",
        "Harvard_University-22",
    ),
    (
        "Where does the Scottish Parliament meet?",
        "How many seats are in its debating chamber?",
        "How many seats are in the debating chamber of the Scottish Parliament?",
        "Scottish_Parliament-10",
    ),
    (
        "Which city is the fifth-largest city in California?",
        "What is the name of the first aviation community built there?",
        "What is the name of the first aviation community built in Fresno?",
        "Fresno,_California-18",
    ),
    (
        "What was the Black Death?",
        "How many French people were lost to it between 1628 and 1631?",
        "How many French people were lost to the plague between 1628 and 1631?",
        "Black_Death-18",
    ),
    (
        "What is the capital of Kenya?",
        "Where did its first shipment of minerals ship from?",
        "Where did Kenya's first shipment of minerals ship from?",
        "Kenya-35",
    ),
    (
        "How many people live in Warsaw?",
        "What plateau there has groups of clay pits?",
        "What plateau in Warsaw has groups of clay pits?",
        "Warsaw-32",
    ),
    (
        "What is Sky UK?",
        "How many television and radio channels could its new digital service carry?",
        "How many television and radio channels could Sky's new digital service carry?",
        "Sky_(United_Kingdom)-11",
    ),
]


def _documents() -> list[DocumentToIngest]:
    rows = read_jsonl(shared_dir() / "data" / "squad-dev" / "corpus.jsonl")
    return [
        DocumentToIngest(row["_id"], f"{row['title'].replace('_', ' ')}\n{row['text']}".encode())
        for row in rows
    ]


def _scores(ranks: list[int | None]) -> dict[str, float]:
    """hit@1, hit@5 and MRR@5 of the target paragraph's ranks (None: not in the top 5)."""
    count = len(ranks)
    return {
        "hit@1": sum(rank == 1 for rank in ranks) / count,
        "hit@5": sum(rank is not None for rank in ranks) / count,
        "MRR@5": sum(1 / rank for rank in ranks if rank is not None) / count,
    }


def _rank(document_ids: list[str], target: str) -> int | None:
    ranked = list(dict.fromkeys(document_ids))[:TOP_K]
    return ranked.index(target) + 1 if target in ranked else None


async def _search(client: RaglineClient, text: str, target: str) -> int | None:
    reply = await client.search(text, collection=COLLECTION, top_k=TOP_K, cache_policy=gw.CACHE_POLICY_BYPASS)
    return _rank([hit.document_id for hit in reply.hits], target)


async def _ask(client: RaglineClient, question: str, conversation_id: str) -> list[str]:
    """The document ids of the passages an answer in the conversation was given, best first."""
    hits: list[str] = []
    events = client.ask_stream(
        question,
        collection=COLLECTION,
        top_k=TOP_K,
        cache_policy=gw.CACHE_POLICY_BYPASS,
        conversation_id=conversation_id,
        max_tokens=ANSWER_TOKENS,
    )
    async for event in events:
        if event.HasField("passages"):
            hits = [hit.document_id for hit in event.passages.hits]
    return hits


async def _evaluate(stack: Stack, with_model: bool) -> dict[str, Any]:
    ranks: dict[str, list[int | None]] = {"raw": [], "fallback": [], "standalone": []}
    if with_model:
        ranks["conversation"] = []
    searched: list[dict[str, Any]] = []
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        documents = _documents()
        for start in range(0, len(documents), INGEST_BATCH):
            await client.ingest(documents[start : start + INGEST_BATCH], collection=COLLECTION)
        for first, follow_up, standalone, target in FOLLOW_UPS:
            carried = fallback(follow_up, [Exchange(first, "", "")])
            ranks["raw"].append(await _search(client, follow_up, target))
            ranks["fallback"].append(await _search(client, carried, target))
            ranks["standalone"].append(await _search(client, standalone, target))
            searched.append({"follow-up": follow_up, "fallback": carried})
            if with_model:
                conversation_id = str(uuid.uuid4())
                await _ask(client, first, conversation_id)
                ranks["conversation"].append(_rank(await _ask(client, follow_up, conversation_id), target))
                turn = (await client.get_conversation(conversation_id)).turns[-1]
                searched[-1]["conversation"] = turn.standalone_question
                searched[-1]["method"] = conversation_pb2.RewriteMethod.Name(turn.rewrite_method)
            searched[-1]["ranks"] = {mode: mode_ranks[-1] for mode, mode_ranks in ranks.items()}
            print(f"  {target}: ranks {searched[-1]['ranks']}", flush=True)
    rows = [{"follow-up searched as": mode, **_scores(mode_ranks)} for mode, mode_ranks in ranks.items()]
    return {"rows": rows, "searched": searched}


def main() -> None:
    """Runs the evaluation and prints and saves the table; `--without-model` leaves out the conversation
    mode, and with it the generator (minutes instead of most of an hour on a loaded machine)."""
    with_model = "--without-model" not in sys.argv[1:]
    services = (
        ("embedder", "retriever", "generator", "gateway")
        if with_model
        else ("embedder", "retriever", "gateway")
    )
    with tempfile.TemporaryDirectory(prefix="ragline-followups-") as state:
        stack = Stack(
            state=Path(state),
            services=services,
            free_ports=True,
            env={
                "DATABASE_URL": "",
                "REDIS_URL": "",
                "GATEWAY_RERANK": "false",
                "GATEWAY_EMBED_TIMEOUT_SECONDS": "600",
                "GATEWAY_RETRIEVE_TIMEOUT_SECONDS": "120",
                # A loaded machine must not turn the model's rewrites into timeouts: the quality is measured.
                "GATEWAY_GENERATE_TIMEOUT_SECONDS": "900",
                "GENERATOR_REQUEST_TIMEOUT_SECONDS": "900",
                "GENERATOR_REWRITE_TIMEOUT_SECONDS": "300",
            },
        )
        print(f"starting {', '.join(services)} (state in {state}) ...", flush=True)
        stack.start()
        try:
            print("ingesting the SQuAD dev paragraphs, then asking the follow-ups ...", flush=True)
            result = asyncio.run(_evaluate(stack, with_model))
        finally:
            stack.stop()
    for each in result["searched"]:
        print(f"  {each.get('method', ''):<24} {each.get('conversation', each['fallback'])}")
    methods = [each.get("method") for each in result["searched"]]
    write_report(
        "eval_followups",
        result["rows"],
        {
            "conversations": len(FOLLOW_UPS),
            "collection": "squad-dev (1,299 paragraphs), the default search mode, no reranker, caches bypassed",
            "model rewrites used": methods.count("REWRITE_METHOD_MODEL"),
            "fallbacks used": methods.count("REWRITE_METHOD_FALLBACK"),
            "searched": result["searched"],
        },
    )


if __name__ == "__main__":
    main()
