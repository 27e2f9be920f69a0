"""`make tune`: a small grid over the retrieval settings, decided on the mean nDCG@10 across collections.

For each chunk size (GATEWAY_CHUNK_TOKENS) the embedder, retriever and gateway start afresh and
every shared BEIR collection (`benchmarks.beir`) is ingested through the gateway, as `make eval`
does. The queries are embedded once; then each setting ranks every query through the retriever's
SearchChunks, which takes BM25's k1 and b, the fusion constant k and the two lists' weights per
request, so no restart is needed between settings. Candidates per side are the hybrid statement's
list depth (its top_k); document grouping is the gateway's own `group_hits` on the candidates.

Each setting moves one knob away from the defaults (k1 1.5, b 0.75, k 60, weights 1 and 1, 40
candidates per side, chunk hits), so every row reads as "what this one choice is worth"; the
table gives nDCG@10 per collection and the mean, the figure defaults are chosen by.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks import beir
from benchmarks.eval_retrieval import ingest, start_stack
from benchmarks.report import write_report
from ragline.client import RaglineClient
from ragline.v1 import common_pb2, embedder_service_pb2, gateway_service_pb2
from ragline.v1 import embedder_service_pb2_grpc as embedder_grpc
from ragline.v1 import retriever_service_pb2 as rpb
from ragline.v1 import retriever_service_pb2_grpc as retriever_grpc
from ragline.v1.gateway_service_pb2 import ResultGrouping
from ragline_gateway.grouping import group_hits

CHUNK_SIZES = (200, 512)
TENANT = "default"
DEPTH = 100
EMBED_BATCH = 32
DOCUMENT = gateway_service_pb2.RESULT_GROUPING_DOCUMENT


@dataclass(frozen=True)
class Setting:
    """One point of the grid: a label, the mode, SearchChunks' options, the list depth and the grouping."""

    label: str
    mode: common_pb2.SearchMode
    options: Mapping[str, float] = field(default_factory=dict)
    depth: int = DEPTH
    grouping: ResultGrouping = gateway_service_pb2.RESULT_GROUPING_CHUNK
    share: float = 0.0


KEYWORD, VECTOR, HYBRID = (
    common_pb2.SEARCH_MODE_KEYWORD,
    common_pb2.SEARCH_MODE_VECTOR,
    common_pb2.SEARCH_MODE_HYBRID,
)
SETTINGS = [
    Setting("vector", VECTOR),
    *(
        Setting(f"keyword k1 {k1} b {b}", KEYWORD, {"bm25_k1": k1, "bm25_b": b})
        for k1 in (0.9, 1.2, 1.5, 2.0)
        for b in (0.4, 0.75, 0.9)
    ),
    *(Setting(f"hybrid {n} candidates per side", HYBRID, depth=n) for n in (40, 100, 200)),
    *(Setting(f"hybrid rrf k {k}", HYBRID, {"rrf_k": k}, depth=40) for k in (10, 30, 100)),
    *(
        Setting(f"hybrid keyword weight {w}", HYBRID, {"keyword_weight": w}, depth=40)
        for w in (0.5, 0.8, 1.25)
    ),
    *(
        Setting(f"hybrid k1 {k1} b {b}", HYBRID, {"bm25_k1": k1, "bm25_b": b}, depth=40)
        for k1, b in ((1.2, 0.75), (1.5, 0.9))
    ),
    *(
        Setting(f"{name} documents, share {s}", mode, depth=d, grouping=DOCUMENT, share=s)
        for name, mode, d in (("keyword", KEYWORD, DEPTH), ("hybrid", HYBRID, 40))
        for s in (0.0, 0.1, 0.25, 0.5)
    ),
]


async def _embed(stub: embedder_grpc.EmbedderServiceStub, texts: list[str]) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBED_BATCH):
        reply = await stub.Embed(
            embedder_service_pb2.EmbedRequest(
                texts=texts[start : start + EMBED_BATCH], input_type=embedder_service_pb2.INPUT_TYPE_QUERY
            )
        )
        vectors += [list(e.values) for e in reply.embeddings]
    return vectors


async def _score(
    stub: retriever_grpc.RetrieverServiceStub,
    collection: beir.Collection,
    queries: dict[str, tuple[str, list[float]]],
    setting: Setting,
) -> float:
    """The setting's nDCG@10 on one collection."""
    run: list[Any] = []
    for query_id, (text, vector) in queries.items():
        request = rpb.SearchChunksRequest(
            tenant=TENANT,
            collection=collection.name,
            query_text=text,
            query_embedding=vector if setting.mode != KEYWORD else [],
            top_k=setting.depth,
            mode=setting.mode,
            **setting.options,  # type: ignore[arg-type]
        )
        hits = group_hits((await stub.SearchChunks(request)).hits, setting.grouping, setting.share)
        run += beir.run_from_ranking(query_id, (hit.document_id for hit in hits))
    return beir.score(collection.qrels(), run)["nDCG@10"]


async def _tune(stack_addresses: dict[str, str], api_key: str, chunk_tokens: int) -> list[dict[str, Any]]:
    collections = beir.collections()
    async with RaglineClient(stack_addresses["gateway"], timeout=600, api_key=api_key) as client:
        for collection in collections:
            print(f"chunks of {chunk_tokens} tokens: ingesting {collection.name} ...", flush=True)
            await ingest(client, collection, collection.name)
    rows = []
    async with (
        grpc.aio.insecure_channel(stack_addresses["embedder"]) as embedder,
        grpc.aio.insecure_channel(stack_addresses["retriever"]) as retriever,
    ):
        embed, search = (
            embedder_grpc.EmbedderServiceStub(embedder),
            retriever_grpc.RetrieverServiceStub(retriever),
        )
        embedded = {}
        for collection in collections:
            texts = collection.queries()
            vectors = await _embed(embed, list(texts.values()))
            embedded[collection.name] = dict(
                zip(texts, zip(texts.values(), vectors, strict=True), strict=True)
            )
        for setting in SETTINGS:
            row: dict[str, Any] = {"chunk tokens": chunk_tokens, "setting": setting.label}
            for collection in collections:
                row[collection.name] = await _score(search, collection, embedded[collection.name], setting)
            row["mean nDCG@10"] = statistics.fmean(row[c.name] for c in collections)
            figures = ", ".join(f"{c.name} {row[c.name]:.4f}" for c in collections)
            print(f"  {setting.label}: {figures}, mean nDCG@10 {row['mean nDCG@10']:.4f}", flush=True)
            rows.append(row)
    return rows


def main() -> None:
    """Runs the grid for every chunk size and prints and saves the table."""
    rows: list[dict[str, Any]] = []
    for chunk_tokens in CHUNK_SIZES:
        with tempfile.TemporaryDirectory(prefix="ragline-tune-") as state:
            stack = start_stack(Path(state), {"GATEWAY_CHUNK_TOKENS": str(chunk_tokens)})
            try:
                addresses = {name: stack[name].address for name in ("embedder", "retriever", "gateway")}
                rows += asyncio.run(_tune(addresses, stack.api_key, chunk_tokens))
            finally:
                stack.stop()
    write_report(
        "tune_retrieval",
        rows,
        {
            "measure": "nDCG@10 by the retriever's SearchChunks (gateway ingest), documents at their first hit",
            "defaults": "k1 1.5, b 0.75, rrf k 60, weights 1/1, 40 candidates per side, chunk hits",
        },
    )


if __name__ == "__main__":
    main()
