"""`make bench` (ingest): documents/s and chunks/s of ingest jobs end to end, and how busy they keep the embedder.

Starts a fresh stack (new database and cache, so nothing is skipped as already stored or
cached), streams each data set into one job with `UploadIngestDocuments`, and times it
from the first byte sent until the job has finished. Two data sets:

- Cranfield: the 1,400 abstracts of ../shared/data/cranfield.
- synthetic: ten times as many documents (14,000), each two sentences drawn at random from
  the Cranfield abstracts, so per-document costs (claims, upserts, bookkeeping) weigh more.

The embedder's share of busy time is the model time it reports
(`ragline_embedder_model_seconds_sum`, scraped before and after) over the wall time; the
pipeline must keep it at least 85% busy. Beside it, the raw model's passages/s, measured in
this process in the same run on a sample of the same chunks (cut by the gateway's chunker
with its default settings), and the embedder's mean batch size.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import beir
from benchmarks.bench_embedder import raw_model_rate
from benchmarks.report import write_report
from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline_gateway.chunking import chunk_sections
from ragline_gateway.config import GatewayConfig
from ragline_gateway.formats import Section

STATE = Path(__file__).resolve().parent.parent / "bench-results" / "state-ingest"
SYNTHETIC_FACTOR = 10
RAW_SAMPLE = 256


def _sentences(texts: list[str]) -> list[str]:
    return [s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 5]


def data_sets() -> dict[str, list[tuple[str, str]]]:
    """Each data set as (document id, text) pairs."""
    documents = [(d.id, d.text) for d in beir.load("cranfield").documents() if d.text.strip()]
    sentences = _sentences([text for _, text in documents])
    rng = random.Random(7)
    synthetic = [
        (f"synthetic-{i}", " ".join(rng.sample(sentences, 2)))
        for i in range(len(documents) * SYNTHETIC_FACTOR)
    ]
    return {"cranfield": documents, "synthetic": synthetic}


def _embedder_totals(stack: Stack) -> dict[str, float]:
    """Model seconds, batches and texts in batches so far, from the embedder's /metrics."""
    embedder = stack["embedder"]
    return {
        "model": embedder.metric("ragline_embedder_model_seconds_sum"),
        "batches": embedder.metric("ragline_embedder_batch_size_count"),
        "texts": embedder.metric("ragline_embedder_batch_size_sum"),
    }


def chunk_sample(documents: list[tuple[str, str]]) -> list[str]:
    """A random sample of the chunks the gateway cuts from `documents`."""
    config = GatewayConfig()
    picked = random.Random(1).sample(documents, RAW_SAMPLE)
    chunks = [
        c.text
        for _, text in picked
        for c in chunk_sections([Section(text)], config.chunk_tokens, config.chunk_overlap_tokens)
    ]
    return chunks[:RAW_SAMPLE]


async def _ingest(stack: Stack, name: str, documents: list[tuple[str, str]]) -> dict[str, Any]:
    def stream() -> Iterator[DocumentToIngest]:
        for document_id, text in documents:
            yield DocumentToIngest(document_id, text.encode(), "text/plain")

    async with RaglineClient(stack["gateway"].address, timeout=3600, api_key=stack.api_key) as client:
        before = _embedder_totals(stack)
        started = time.perf_counter()
        job = await client.upload_ingest_documents(stream(), collection=name)
        uploaded = time.perf_counter() - started
        job = await client.wait_for_ingest_job(job.job_id, poll_seconds=0.2)
        wall = time.perf_counter() - started
        after = _embedder_totals(stack)
    if job.state != common_pb2.INGEST_JOB_STATE_SUCCEEDED:
        raise SystemExit(f"the {name} job ended {common_pb2.IngestJobState.Name(job.state)}: {job}")
    return {
        "data set": name,
        "documents": job.total_documents,
        "chunks": job.written_chunks,
        "upload s": uploaded,
        "wall s": wall,
        "documents/s": job.total_documents / wall,
        "chunks/s": job.written_chunks / wall,
        "embedder busy": (after["model"] - before["model"]) / wall,
        "mean batch": (after["texts"] - before["texts"]) / max(1.0, after["batches"] - before["batches"]),
    }


def main() -> None:
    """Runs the ingestion benchmark and writes bench-results/ingest.json."""
    sets = data_sets()
    shutil.rmtree(STATE, ignore_errors=True)
    stack = Stack(state=STATE, free_ports=True, env={"REDIS_URL": "", "DATABASE_URL": ""})
    stack.start()
    rows = []
    try:
        for name, documents in sets.items():
            row = asyncio.run(_ingest(stack, name, documents))
            # Right after, on the same kind of chunks, while the services sit idle.
            raw = raw_model_rate(chunk_sample(documents))
            row["raw model passages/s"] = raw
            row["chunks/s ÷ raw"] = row["chunks/s"] / raw
            rows.append(row)
    finally:
        stack.stop()
    write_report(
        "ingest",
        rows,
        {
            "target": "embedder busy >= 0.85 of the wall time",
            "synthetic": f"{SYNTHETIC_FACTOR}x the Cranfield documents, two random Cranfield sentences each",
        },
    )


if __name__ == "__main__":
    main()
