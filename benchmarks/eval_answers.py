"""`make eval-answers`: answer quality on SQuAD v1.1 dev questions, measured through the public Ask.

Starts the four services (`ragline.devstack`, a fresh embedded PostgreSQL and Redis in a
temporary directory) and ingests, through the gateway, the gold paragraphs of the first
EVAL_QUESTIONS questions of ../shared/data/squad-dev (100 by default) with their articles'
neighbouring paragraphs (within two positions) as distractors, and EVAL_CRANFIELD Cranfield
abstracts (300) into a second collection that cannot answer them. Then, per answer mode of
EVAL_MODES (`default,generative,extractive,auto`), it asks every question (cache bypassed, one at a time) and reports:

- exact match and token F1 (official SQuAD normalisation, `[n]` markers removed) and the lenient
  "answer contains a gold answer";
- citation precision (pooled citations whose document is the gold paragraph) and answer supported
  (gold paragraph among the cited);
- refusal rate ("not found" or "I don't know") on the answerable questions (false refusals) and on
  the first EVAL_UNANSWERABLE (50) questions asked of the Cranfield collection;
- Ask latency p50/p95 as the client measures it;

and once, retrieval hit@5 (gold paragraph among the top 5 Search hits). A threshold sweep of the
reported relevance (the best cosine between the question and the sentences of the top passages)
gives the refusal rates a "not found" threshold would have, for calibrating
GATEWAY_NOT_FOUND_THRESHOLD. Answers are limited to EVAL_MAX_TOKENS (64: SQuAD answers are
short spans, and on a loaded 2-core machine a 256-token answer takes minutes); EVAL_TOP_K the passages
answered from (0: the gateway's default). EVAL_SERVICES_FROM
names another checkout (e.g. `git archive` of an older commit) whose lib/, gateway/ and services/
the services run from, for before/after figures side by side; EVAL_NAME suffixes the report's
name (bench-results/eval_answers*.json).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks import beir, squad
from benchmarks.report import percentile, write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

SQUAD = "squad"
UNANSWERABLE = "cranfield"
INGEST_BATCH = 25
NEIGHBOURS = 2
DONT_KNOW = "I don't know."
MODES = {
    "generative": common_pb2.ANSWER_MODE_GENERATIVE,
    "extractive": common_pb2.ANSWER_MODE_EXTRACTIVE,
    "auto": common_pb2.ANSWER_MODE_AUTO,
}
_MODE_NAMES = {value: name for name, value in MODES.items()}
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _corpus(questions: list[squad.Question]) -> dict[str, str]:
    """The gold paragraphs and their articles' paragraphs within NEIGHBOURS positions."""
    wanted: set[str] = set()
    for question in questions:
        title, _, index = question.doc_id.rpartition("-")
        wanted.update(f"{title}-{int(index) + step}" for step in range(-NEIGHBOURS, NEIGHBOURS + 1))
    return {doc_id: text for doc_id, text in squad.paragraphs().items() if doc_id in wanted}


async def _ingest(client: RaglineClient, documents: dict[str, str], collection: str) -> None:
    items = list(documents.items())
    for start in range(0, len(items), INGEST_BATCH):
        batch = [DocumentToIngest(i, t.encode()) for i, t in items[start : start + INGEST_BATCH]]
        await client.ingest(batch, collection=collection)


def _refused(response: gw.AskResponse) -> bool:
    return (
        response.not_found
        or response.answer.strip() == DONT_KNOW
        or response.finish_reason == common_pb2.FINISH_REASON_NO_CONTEXT
    )


async def _ask(
    client: RaglineClient, question: str, collection: str, mode: str
) -> tuple[gw.AskResponse | None, float]:
    started = time.perf_counter()
    try:
        response = await client.ask(
            question,
            collection=collection,
            max_tokens=int(_setting("EVAL_MAX_TOKENS", "64")),
            top_k=int(_setting("EVAL_TOP_K", "0")),
            answer_mode=MODES.get(mode, common_pb2.ANSWER_MODE_UNSPECIFIED),
            cache_policy=gw.CACHE_POLICY_BYPASS,
        )
    except grpc.aio.AioRpcError as exc:
        print(f"  {question!r} failed: {exc.code().name} {exc.details()}", flush=True)
        return None, time.perf_counter() - started
    return response, time.perf_counter() - started


async def _mode_row(
    client: RaglineClient,
    mode: str,
    questions: list[squad.Question],
    unanswerable: list[squad.Question],
    relevance: dict[str, list[float]],
) -> dict[str, Any]:
    em = f1 = contains = supported = refused = 0.0
    cited = cited_gold = failed = 0
    latencies: list[float] = []
    used: dict[common_pb2.AnswerMode, int] = {}
    for index, question in enumerate(questions):
        response, seconds = await _ask(client, question.text, SQUAD, mode)
        latencies.append(seconds)
        if index % 5 == 4:
            print(f"  {index + 1} questions, median {1000 * percentile(latencies, 50):.0f} ms", flush=True)
        if response is None:
            failed += 1
            continue
        relevance["answerable"].append(response.relevance)
        used[response.answer_mode] = used.get(response.answer_mode, 0) + 1
        if _refused(response):
            refused += 1
            continue
        em += squad.exact_match(response.answer, question.answers)
        f1 += squad.token_f1(response.answer, question.answers)
        contains += squad.contains_gold(response.answer, question.answers)
        documents = [c.document_id for c in response.citations]
        cited += len(documents)
        cited_gold += documents.count(question.doc_id)
        supported += question.doc_id in documents
    unanswerable_refused = 0.0
    for question in unanswerable:
        response, _ = await _ask(client, question.text, UNANSWERABLE, mode)
        if response is None:
            failed += 1
            continue
        relevance["unanswerable"].append(response.relevance)
        unanswerable_refused += _refused(response)
    n = len(questions)
    return {
        "answer mode": mode,
        "EM": em / n,
        "F1": f1 / n,
        "contains gold": contains / n,
        "citation precision": cited_gold / cited if cited else 0.0,
        "answer supported": supported / n,
        "false refusals": refused / n,
        "refusal (unanswerable)": unanswerable_refused / len(unanswerable) if unanswerable else 0.0,
        "failed Asks": failed,
        "Ask p50 ms": 1000 * percentile(latencies, 50),
        "Ask p95 ms": 1000 * percentile(latencies, 95),
        "modes used": ", ".join(f"{_MODE_NAMES.get(k, 'n/a')}: {v}" for k, v in sorted(used.items())),
    }


async def _evaluate(stack: Stack) -> dict[str, Any]:
    questions = squad.questions()[: int(_setting("EVAL_QUESTIONS", "100"))]
    unanswerable = questions[: int(_setting("EVAL_UNANSWERABLE", "50"))]
    modes = _setting("EVAL_MODES", "default,generative,extractive,auto").split(",")
    corpus = _corpus(questions)
    abstracts = beir.load("cranfield").documents()[: int(_setting("EVAL_CRANFIELD", "300"))]
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        started = time.perf_counter()
        await _ingest(client, corpus, SQUAD)
        await _ingest(client, {d.id: d.text for d in abstracts}, UNANSWERABLE)
        ingest_seconds = time.perf_counter() - started
        hits = 0
        for question in questions:
            reply = await client.search(
                question.text, collection=SQUAD, top_k=5, cache_policy=gw.CACHE_POLICY_BYPASS
            )
            hits += question.doc_id in {hit.document_id for hit in reply.hits}
        rows = []
        relevance: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
        for mode in modes:
            print(f"asking in mode {mode} ...", flush=True)
            row = await _mode_row(client, mode, questions, unanswerable, relevance)
            rows.append({**row, "hit@5": hits / len(questions)})
    sweep = {
        f"threshold {t}": (
            f"refuses {_share(relevance['unanswerable'], t):.0%} unanswerable, "
            f"{_share(relevance['answerable'], t):.0%} answerable"
        )
        for t in THRESHOLDS
        if any(relevance["answerable"])
    }
    return {
        "rows": rows,
        "notes": {
            "questions": len(questions),
            "squad paragraphs ingested": len(corpus),
            "unanswerable questions (asked of Cranfield abstracts)": len(unanswerable),
            "cranfield abstracts ingested": len(abstracts),
            "ingest seconds": round(ingest_seconds, 1),
            **sweep,
        },
    }


def _share(values: list[float], threshold: float) -> float:
    return sum(v < threshold for v in values) / len(values)


def _services_path() -> dict[str, str]:
    """PYTHONPATH for the services when EVAL_SERVICES_FROM names another checkout; it comes before
    the editable installs of this one."""
    root = os.environ.get("EVAL_SERVICES_FROM")
    if not root:
        return {}
    folders = ["lib", "gateway", *(f"services/{s}" for s in ("embedder", "retriever", "generator"))]
    return {"PYTHONPATH": os.pathsep.join(str(Path(root) / folder) for folder in folders)}


def main() -> None:
    """Runs the evaluation and prints and saves the table."""
    with tempfile.TemporaryDirectory(prefix="ragline-eval-answers-") as state:
        stack = Stack(
            state=Path(state),
            free_ports=True,
            env={
                "DATABASE_URL": "",
                "GATEWAY_EMBED_TIMEOUT_SECONDS": "600",
                "GATEWAY_RETRIEVE_TIMEOUT_SECONDS": "120",
                "GATEWAY_GENERATE_TIMEOUT_SECONDS": "600",
                "GENERATOR_REQUEST_TIMEOUT_SECONDS": "600",
                # A loaded machine takes minutes per answer: no connection may be closed under one.
                "GATEWAY_MAX_CONNECTION_AGE_GRACE_SECONDS": "1800",
                "GENERATOR_MAX_CONNECTION_AGE_GRACE_SECONDS": "1800",
                **_services_path(),
            },
        )
        print(f"starting the services (state in {state}) ...", flush=True)
        stack.start(timeout=600)
        try:
            result = asyncio.run(_evaluate(stack))
        finally:
            stack.stop()
    write_report("eval_answers" + _setting("EVAL_NAME", ""), result["rows"], result["notes"])


if __name__ == "__main__":
    main()
