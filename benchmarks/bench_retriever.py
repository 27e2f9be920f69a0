"""`make bench` (retriever): 100,000 chunks of 384 dimensions: load, index build, search speed and recall.

Also keyword (BM25) and hybrid search speed with the real Cranfield query texts, whose terms
select their postings among the 100,000 chunks' (texts of Cranfield passages, repeated).

Starts the real retriever (`ragline.devstack`, embedded PostgreSQL in a temporary directory) and
creates the collection over gRPC. The bulk load goes straight to the database the retriever uses,
with binary COPY (asyncpg `copy_records_to_table`, as UpsertDocument does) into `documents` and
`chunks`, the collection's HNSW index dropped first and rebuilt afterwards with the retriever's
own DDL and `maintenance_work_mem` (loading into a live HNSW index inserts row by row, several
times slower). Every search goes through the retriever's SearchChunks over gRPC. Vectors come
from `benchmarks.retriever_vectors` (real MiniLM embeddings of Cranfield text, multiplied);
recall@10 is measured against exact cosine search in numpy over the same halfvec-rounded vectors.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
from numpy.typing import NDArray
from pgvector.asyncpg import register_vector

from benchmarks import beir
from benchmarks.report import percentile, write_report
from benchmarks.retriever_vectors import base_vectors, synthesise
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.document_store import _COPY_COLUMNS as CHUNK_COLUMNS
from ragline_retriever.search import create_index_sql, drop_index_sql, index_name

CHUNKS = int(os.environ.get("BENCH_RETRIEVER_CHUNKS", "100000"))
CHUNKS_PER_DOCUMENT = 10
DIMENSION = 384
TOP_K = 10
BUCKETS = 10  # documents carry {"bucket": n % 10}: a filter on one bucket keeps 10% of the chunks
QUERIES = 200
MAINTENANCE_WORK_MEM = "1GB"
COLLECTION = "bench"
# The retriever confines every call to a tenant; the gateway passes the caller's.
TENANT = "bench"


def _cranfield() -> Path:
    return beir.shared_dir() / "data" / "cranfield"


def _query_texts() -> list[str]:
    """The Cranfield query texts, in the order of `base_vectors`' query embeddings."""
    lines = (_cranfield() / "queries.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def _database_url(state: Path) -> str:
    lines = (state / "postgres" / "postmaster.pid").read_text().splitlines()
    return f"postgresql://postgres@/postgres?host={lines[4].strip()}&port={lines[3].strip()}"


async def _load(
    url: str, texts: list[str], vectors: NDArray[np.float32], origin: NDArray[np.int64]
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await register_vector(conn)
        collection_id = await conn.fetchval(
            "SELECT id FROM collections WHERE tenant = $1 AND name = $2", TENANT, COLLECTION
        )
        await conn.execute(drop_index_sql(collection_id))
        started = time.perf_counter()
        documents = CHUNKS // CHUNKS_PER_DOCUMENT
        async with conn.transaction():
            await conn.copy_records_to_table(
                "documents",
                columns=["collection_id", "document_id", "metadata", "content_hash", "chunk_count"],
                records=[
                    (
                        collection_id,
                        f"doc-{j:06d}",
                        f'{{"bucket": {j % BUCKETS}}}',
                        "0" * 64,
                        CHUNKS_PER_DOCUMENT,
                    )
                    for j in range(documents)
                ],
            )
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM documents WHERE collection_id = $1 ORDER BY document_id", collection_id
                )
            ]
            await conn.copy_records_to_table(
                "chunks",
                # The columns UpsertDocument writes; the chunks' own metadata is empty, as in most documents.
                columns=CHUNK_COLUMNS,
                records=(
                    (
                        ids[i // CHUNKS_PER_DOCUMENT],
                        collection_id,
                        i % CHUNKS_PER_DOCUMENT,
                        texts[origin[i]],
                        0,
                        f"{i:064x}",
                        vectors[i],
                        "{}",
                    )
                    for i in range(CHUNKS)
                ),
            )
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        await conn.execute(create_index_sql(collection_id, DIMENSION, 16, 64))
        build_seconds = time.perf_counter() - started
        await conn.execute("ANALYZE chunks; ANALYZE documents")
        chunk_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM chunks WHERE collection_id = $1 ORDER BY id", collection_id
            )
        ]
        return {
            "load_seconds": load_seconds,
            "build_seconds": build_seconds,
            "index_bytes": await conn.fetchval(
                "SELECT pg_relation_size($1::regclass)", index_name(collection_id)
            ),
            "postings": await conn.fetchval(
                "SELECT count(*) FROM chunk_terms WHERE collection_id = $1", collection_id
            ),
            "chunk_ids": chunk_ids,
        }
    finally:
        await conn.close()


def _exact(
    stored: NDArray[np.float32], queries: NDArray[np.float32], mask: NDArray[np.bool_] | None
) -> NDArray[np.int64]:
    similarity = queries @ stored.T
    if mask is not None:
        similarity[:, ~mask] = -np.inf
    return np.argsort(-similarity, axis=1)[:, :TOP_K]


async def _searches(
    stub: pb_grpc.RetrieverServiceStub,
    queries: NDArray[np.float32],
    callers: int,
    ef_search: int = 0,
    metadata_filter: common_pb2.MetadataFilter | None = None,
    mode: common_pb2.SearchMode = common_pb2.SEARCH_MODE_VECTOR,
    texts: list[str] | None = None,
) -> tuple[list[list[int]], list[float], float]:
    results: list[list[int]] = [[] for _ in queries]
    latencies: list[float] = []

    async def caller(offset: int) -> None:
        for q in range(offset, len(queries), callers):
            request = pb.SearchChunksRequest(
                tenant=TENANT,
                collection=COLLECTION,
                query_text=texts[q] if texts else "",
                query_embedding=queries[q].tolist() if mode != common_pb2.SEARCH_MODE_KEYWORD else [],
                top_k=TOP_K,
                mode=mode,
                ef_search=ef_search,
                filter=metadata_filter,
            )
            started = time.perf_counter()
            reply = await stub.SearchChunks(request)
            latencies.append(time.perf_counter() - started)
            results[q] = [int(hit.chunk_id) for hit in reply.hits]

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return results, latencies, time.perf_counter() - started


def _recall(found: list[list[int]], exact: NDArray[np.int64], chunk_ids: list[int]) -> float:
    hits = sum(len(set(f) & {chunk_ids[i] for i in row}) for f, row in zip(found, exact, strict=True))
    return hits / exact.size


def _row(
    search: str,
    callers: int,
    found: list[list[int]],
    latencies: list[float],
    seconds: float,
    recall: float | str,
) -> dict[str, Any]:
    """One line of the table: a search's latency, throughput, recall (blank without an exact answer) and rows."""
    return {
        "search": search,
        "callers": callers,
        "p50 ms": 1000 * percentile(latencies, 50),
        "p99 ms": 1000 * percentile(latencies, 99),
        "QPS": len(found) / seconds,
        "recall@10": recall,
        "rows/query": sum(map(len, found)) / len(found),
    }


async def _bench(stack: Stack, state: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    passages, base, query_vectors = base_vectors(_cranfield())
    vectors, origin = synthesise(base, CHUNKS)
    queries = query_vectors[:QUERIES]
    async with grpc.aio.insecure_channel(stack["retriever"].address) as channel:
        stub = pb_grpc.RetrieverServiceStub(channel)
        await stub.CreateStoredCollection(
            pb.CreateStoredCollectionRequest(
                tenant=TENANT, name=COLLECTION, embedding_model="all-MiniLM-L6-v2", dimension=DIMENSION
            )
        )
        loaded = await _load(_database_url(state), passages, vectors, origin)
        stored = vectors.astype(np.float16).astype(np.float32)
        stored /= np.linalg.norm(stored, axis=1, keepdims=True)
        exact = _exact(stored, queries, None)
        bucket = (np.arange(CHUNKS) // CHUNKS_PER_DOCUMENT) % BUCKETS == 3
        exact_filtered = _exact(stored, queries, bucket)
        await _searches(stub, queries[:20], 1)  # warm the index into memory
        rows = []
        for callers in (1, 4):
            found, latencies, seconds = await _searches(stub, queries, callers)
            recall = _recall(found, exact, loaded["chunk_ids"])
            rows.append(
                _row(f"vector top {TOP_K}, default ef_search", callers, found, latencies, seconds, recall)
            )
        found, latencies, seconds = await _searches(stub, queries, 1, ef_search=200)
        recall = _recall(found, exact, loaded["chunk_ids"])
        rows.append(_row(f"vector top {TOP_K}, ef_search 200", 1, found, latencies, seconds, recall))
        bucket_filter = common_pb2.MetadataFilter(
            condition=common_pb2.FieldCondition(field="bucket", operator=common_pb2.FILTER_OPERATOR_EQ)
        )
        bucket_filter.condition.value.number_value = 3
        found, latencies, seconds = await _searches(stub, queries, 1, metadata_filter=bucket_filter)
        recall = _recall(found, exact_filtered, loaded["chunk_ids"])
        label = f"vector top {TOP_K}, filter bucket = 3 (10%), iterative scan"
        rows.append(_row(label, 1, found, latencies, seconds, recall))
        # Keyword (BM25 over the postings) and hybrid search with the real Cranfield query texts.
        texts = _query_texts()[:QUERIES]
        for label, mode in (
            ("keyword (BM25)", common_pb2.SEARCH_MODE_KEYWORD),
            ("hybrid (RRF)", common_pb2.SEARCH_MODE_HYBRID),
        ):
            await _searches(stub, queries[:10], 1, mode=mode, texts=texts)
            found, latencies, seconds = await _searches(stub, queries, 1, mode=mode, texts=texts)
            rows.append(_row(f"{label} top {TOP_K}", 1, found, latencies, seconds, ""))
    notes = {
        "chunks": CHUNKS,
        "dimension": DIMENSION,
        "load seconds (binary COPY of documents + chunks, with tsvector and BM25 postings)": round(
            loaded["load_seconds"], 1
        ),
        "load chunks/s": round(CHUNKS / loaded["load_seconds"]),
        "BM25 postings rows": loaded["postings"],
        f"HNSW build seconds (m=16, ef_construction=64, maintenance_work_mem={MAINTENANCE_WORK_MEM}, CONCURRENTLY)": round(
            loaded["build_seconds"], 1
        ),
        "HNSW index size MB (halfvec)": round(loaded["index_bytes"] / 2**20, 1),
        "queries": len(queries),
        "vectors": "real MiniLM embeddings of 2,796 Cranfield passages, mixed and perturbed; queries: real Cranfield query embeddings",
        "loading": "direct to PostgreSQL by binary COPY; searches over gRPC SearchChunks",
    }
    return rows, notes


def main() -> None:
    """Runs the benchmark and prints and saves the table."""
    with tempfile.TemporaryDirectory(prefix="ragline-bench-retriever-") as state:
        stack = Stack(state=Path(state), services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
        stack.start()
        try:
            rows, notes = asyncio.run(_bench(stack, Path(state)))
        finally:
            stack.stop()
    write_report("bench_retriever", rows, notes)


if __name__ == "__main__":
    main()
