"""`make bench-scale`: vector, keyword and hybrid search on one collection of 1,000,000 chunks.

Not part of `make bench` (it takes tens of minutes at a million chunks); `--chunks 100000` for a
quicker run. Vectors are synthesised from real MiniLM embeddings of Cranfield text as in
`bench_retriever` (`retriever_vectors`), the text is real Cranfield text repeated with variation
(`scale_corpus`), queries are the real Cranfield queries (their texts and embeddings).

The real retriever runs (`ragline.devstack`, embedded PostgreSQL in `--state`, kept between runs:
`--reuse` measures an already loaded database again, with the code and migrations of now). The
load is binary COPY into `documents` and `chunks` through the write path's triggers (tsvector,
BM25 postings and statistics deltas), in transactions of 20,000 chunks, with the collection's HNSW
index dropped first and built afterwards with the retriever's DDL. Every search goes through
SearchChunks over gRPC. Reported: top-10 p50/p99 and QPS with 1 and 4 callers per mode, vector
recall@10 against exact search (numpy, halfvec-rounded vectors) per `ef_search` (the exact ids, and
as ann-benchmarks counts it: `_recall_within`), keyword top-10
against a full BM25 scan (the filtered statement with a filter that keeps everything, also timed),
search p99 while another client ingests, disk, memory, load and index build times.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import numpy as np
import psutil
from numpy.typing import NDArray
from pgvector.asyncpg import register_vector

from benchmarks.bench_retriever import (
    CHUNKS_PER_DOCUMENT,
    COLLECTION,
    DIMENSION,
    TENANT,
    TOP_K,
    _cranfield,
    _database_url,
    _query_texts,
    _recall,
    _row,
    _searches,
)
from benchmarks.report import percentile, write_report
from benchmarks.retriever_vectors import base_vectors, synthesise
from benchmarks.scale_corpus import chunk_texts
from ragline.devstack import Stack
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever import bm25_top_k
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.document_store import _COPY_COLUMNS as CHUNK_COLUMNS
from ragline_retriever.posting_cache import PostingCache
from ragline_retriever.search import (
    create_index_sql,
    drop_index_sql,
    index_name,
    keyword_hits_sql,
    keyword_search_sql,
)

BATCH = 20_000
QUERIES = 200
EF_SEARCHES = (40, 64, 100, 200, 250, 300, 400)
MAINTENANCE_WORK_MEM = "2GB"
# ann-benchmarks' tolerance for recall (`_recall_within`), in cosine distance.
RECALL_EPSILON = 1e-3
# The embedded PostgreSQL's default (128MB) caches a small part of a million chunks' index.
# Not more: PostgreSQL's shared memory counts in each backend's RSS, and the OOM killer of a
# machine shared with other work picked backends with 4GB of it during a load.
SHARED_BUFFERS = "1GB"
VECTOR, KEYWORD, HYBRID = (
    common_pb2.SEARCH_MODE_VECTOR,
    common_pb2.SEARCH_MODE_KEYWORD,
    common_pb2.SEARCH_MODE_HYBRID,
)


async def _collection_id(conn: asyncpg.Connection) -> int | None:
    found: int | None = await conn.fetchval(
        "SELECT id FROM collections WHERE tenant = $1 AND name = $2", TENANT, COLLECTION
    )
    return found


async def _load(url: str, texts: list[str], vectors: NDArray[np.float32], loaded: int) -> dict[str, float]:
    """Loads the chunks from number `loaded` on (COPY through the triggers; an interrupted load goes
    on where it stopped) and builds the HNSW index; the seconds each took."""
    conn = await asyncpg.connect(url)
    try:
        await register_vector(conn)
        collection_id = await _collection_id(conn)
        assert collection_id is not None
        await conn.execute(drop_index_sql(collection_id))
        started = time.perf_counter()
        documents = len(texts) // CHUNKS_PER_DOCUMENT
        if not loaded:
            await conn.copy_records_to_table(
                "documents",
                columns=["collection_id", "document_id", "metadata", "content_hash", "chunk_count"],
                records=[
                    (collection_id, f"doc-{j:07d}", f'{{"bucket": {j % 10}}}', "0" * 64, CHUNKS_PER_DOCUMENT)
                    for j in range(documents)
                ],
            )
        ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM documents WHERE collection_id = $1 ORDER BY document_id", collection_id
            )
        ]
        for first in range(loaded, len(texts), BATCH):
            records = (
                (
                    ids[i // CHUNKS_PER_DOCUMENT],
                    collection_id,
                    i % CHUNKS_PER_DOCUMENT,
                    texts[i],
                    0,
                    f"{i:064x}",
                    vectors[i],
                    "{}",
                )
                for i in range(first, min(first + BATCH, len(texts)))
            )
            await conn.copy_records_to_table("chunks", columns=CHUNK_COLUMNS, records=records)
            print(
                f"loaded {min(first + BATCH, len(texts))} chunks in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
        load_seconds = time.perf_counter() - started
        await conn.execute("SELECT ragline_bm25_fold()")
        started = time.perf_counter()
        await conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        config = RetrieverConfig()
        await conn.execute(
            create_index_sql(collection_id, DIMENSION, config.hnsw_m, config.hnsw_ef_construction)
        )
        build_seconds = time.perf_counter() - started
        print(f"HNSW index built in {build_seconds:.0f} s", flush=True)
        for table in ("chunks", "chunk_terms", "bm25_blocks", "documents"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        return {"load_seconds": load_seconds, "build_seconds": build_seconds}
    finally:
        await conn.close()


def _exact(stored: NDArray[np.float32], queries: NDArray[np.float32]) -> NDArray[np.int64]:
    """The exact top 10 rows of `stored` by cosine similarity for each query, best first (ten
    queries at a time, to keep the similarity matrix small at a million rows)."""
    found = []
    for first in range(0, len(queries), 10):
        similarity = queries[first : first + 10] @ stored.T
        top = np.argpartition(-similarity, TOP_K, axis=1)[:, :TOP_K]
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1)
        found.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(found)


def _recall_within(
    found: list[list[int]],
    exact: NDArray[np.int64],
    stored: NDArray[np.float32],
    queries: NDArray[np.float32],
    row_of: dict[int, int],
) -> float:
    """Recall@10 as ann-benchmarks counts it: a chunk found counts if its distance is at most the
    10th exact distance plus RECALL_EPSILON. The synthetic vectors put hundreds of near-copies of
    one passage around a query, whose order is noise at halfvec precision; this counts an
    equally near copy as found."""
    hits = 0
    for ids, row, query in zip(found, exact, queries, strict=True):
        tenth = 1 - float(stored[row[-1]] @ query)
        distances = 1 - stored[[row_of[i] for i in ids]] @ query
        hits += min(int(np.sum(distances <= tenth + RECALL_EPSILON)), len(row))
    return hits / exact.size


async def _full_scan(url: str, texts: list[str]) -> tuple[list[list[int]], list[float], list[float]]:
    """Keyword top 10 by the full scan (every posting scored: the filtered statement with a filter
    that keeps everything) and as searches find it (`bm25_top_k`, then the hits' rows), timed side by
    side on one connection: the ids of the scan, and both latencies."""
    conn = await asyncpg.connect(url)
    try:
        collection_id = await _collection_id(conn)
        assert collection_id is not None
        full, hits = keyword_search_sql(collection_id, "TRUE"), keyword_hits_sql(collection_id)
        # As the retriever searches: with its posting cache, which a first pass fills.
        cache = PostingCache(RetrieverConfig().posting_cache_bytes)
        for text in texts:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await bm25_top_k.top_k(conn, collection_id, text, TOP_K, 1.5, 0.75, cache=cache)
        found, full_seconds, pruned_seconds = [], [], []
        for text in texts:
            started = time.perf_counter()
            rows = await conn.fetch(full, text, COLLECTION, TOP_K, 1.5, 0.75, TENANT)
            full_seconds.append(time.perf_counter() - started)
            started = time.perf_counter()
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                top = await bm25_top_k.top_k(conn, collection_id, text, TOP_K, 1.5, 0.75, cache=cache)
                await conn.fetch(hits, top.ids.tolist(), COLLECTION, top.scores.tolist(), TENANT)
            pruned_seconds.append(time.perf_counter() - started)
            found.append([r["id"] for r in rows if r["id"] is not None])
        return found, full_seconds, pruned_seconds
    finally:
        await conn.close()


async def _ingest(
    stub: pb_grpc.RetrieverServiceStub, texts: list[str], vectors: NDArray[np.float32], stop: asyncio.Event
) -> int:
    """Upserts new 10-chunk documents, 10 per call, until `stop`; the chunks written."""
    written = 0
    while not stop.is_set():
        requests = []
        for _ in range(10):
            first = written % (len(texts) - CHUNKS_PER_DOCUMENT)
            chunks = [
                common_pb2.ChunkInput(
                    text=texts[first + i], embedding=vectors[first + i].tolist(), token_count=0
                )
                for i in range(CHUNKS_PER_DOCUMENT)
            ]
            document_id = f"ingest-{written:08d}"
            requests.append(
                pb.UpsertDocumentRequest(
                    tenant=TENANT, collection=COLLECTION, document_id=document_id, chunks=chunks
                )
            )
            written += CHUNKS_PER_DOCUMENT
        await stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(tenant=TENANT, collection=COLLECTION, requests=requests)
        )
    return written


def _memory(state: Path, retriever_pid: int) -> dict[str, float]:
    """Proportional set sizes (MiB) of PostgreSQL's processes and of the retriever."""
    postmaster = psutil.Process(int((state / "postgres" / "postmaster.pid").read_text().split()[0]))
    postgres = sum(_pss(p) for p in [postmaster, *postmaster.children()])
    return {
        "PostgreSQL PSS MiB (all processes)": round(postgres / 2**20),
        "retriever PSS MiB": round(psutil.Process(retriever_pid).memory_full_info().pss / 2**20),
    }


def _pss(process: psutil.Process) -> int:
    """The process's proportional set size; 0 if it has exited since it was listed (PostgreSQL's
    autovacuum workers and parallel workers come and go)."""
    try:
        return int(process.memory_full_info().pss)
    except psutil.NoSuchProcess:
        return 0


async def _disk(url: str) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        collection_id = await _collection_id(conn)
        sizes = await conn.fetchrow(
            "SELECT pg_database_size(current_database()) AS db, pg_total_relation_size('chunks') AS chunks,"
            " pg_total_relation_size('chunk_terms') AS postings, pg_total_relation_size('bm25_blocks') AS blocks,"
            " pg_relation_size($1::regclass) AS hnsw,"
            " (SELECT count(*) FROM chunk_terms) AS rows",
            index_name(collection_id or 0),
        )
        assert sizes is not None
    finally:
        await conn.close()
    mib = 2**20
    return {
        "database MiB": round(sizes["db"] / mib),
        "chunks table + indexes MiB": round(sizes["chunks"] / mib),
        "BM25 postings (chunk_terms) MiB": round(sizes["postings"] / mib),
        "BM25 posting blocks (bm25_blocks) MiB": round(sizes["blocks"] / mib),
        "HNSW index MiB (halfvec, m=16)": round(sizes["hnsw"] / mib),
        "BM25 postings rows": sizes["rows"],
    }


async def _measure(
    stub: pb_grpc.RetrieverServiceStub,
    url: str,
    vectors: NDArray[np.float32],
    texts: list[str],
    chunk_ids: list[int],
    count: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    _, _, query_vectors = base_vectors(_cranfield())
    queries = query_vectors[:count]
    query_texts = _query_texts()[:count]
    stored = vectors.astype(np.float16).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    exact = _exact(stored, queries)
    row_of = {chunk_id: row for row, chunk_id in enumerate(chunk_ids)}

    def recalls(found: list[list[int]]) -> str:
        strict = _recall(found, exact, chunk_ids)
        return f"{strict:.3f} / {_recall_within(found, exact, stored, queries, row_of):.3f}"

    rows: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    for mode in (VECTOR, HYBRID):  # warm the caches
        await _searches(stub, queries[:20], 1, mode=mode, texts=query_texts[:20])
    # Keyword search's first pass reads most terms' postings into the posting cache: timed apart.
    found, latencies, seconds = await _searches(stub, queries, 1, mode=KEYWORD, texts=query_texts)
    rows.append(
        _row(f"keyword (BM25) top {TOP_K}, first pass (posting cache cold)", 1, found, latencies, seconds, "")
    )
    for ef_search in EF_SEARCHES:
        found, latencies, seconds = await _searches(stub, queries, 1, ef_search=ef_search)
        rows.append(
            _row(
                f"vector top {TOP_K}, ef_search {ef_search}",
                1,
                found,
                latencies,
                seconds,
                recalls(found),
            )
        )
    idle: dict[str, list[float]] = {}
    for label, mode in (
        ("vector (default ef_search)", VECTOR),
        ("keyword (BM25)", KEYWORD),
        ("hybrid (RRF)", HYBRID),
    ):
        for callers in (1, 4):
            found, latencies, seconds = await _searches(stub, queries, callers, mode=mode, texts=query_texts)
            recall = recalls(found) if mode == VECTOR else ""
            rows.append(_row(f"{label} top {TOP_K}", callers, found, latencies, seconds, recall))
            if callers == 1:
                idle[label] = latencies
                if mode == KEYWORD:
                    keyword_found = found
    scan_found, full_seconds, pruned_seconds = await _full_scan(url, query_texts[: count // 4])
    same = sum(a == b for a, b in zip(scan_found, keyword_found, strict=False))
    notes["keyword top 10 identical to a full BM25 scan (ids and order)"] = (
        f"{same}/{len(scan_found)} queries"
    )
    notes["keyword p50 ms on one connection, full scan vs bm25_top_k (side by side)"] = (
        f"{1000 * percentile(full_seconds, 50):.1f} vs {1000 * percentile(pruned_seconds, 50):.1f}"
    )
    notes["keyword p99 ms, full scan vs bm25_top_k"] = (
        f"{1000 * percentile(full_seconds, 99):.1f} vs {1000 * percentile(pruned_seconds, 99):.1f}"
    )
    stop = asyncio.Event()
    ingester = asyncio.create_task(_ingest(stub, texts, vectors, stop))
    await asyncio.sleep(2)
    started = time.perf_counter()
    for label, mode in (
        ("vector (default ef_search)", VECTOR),
        ("keyword (BM25)", KEYWORD),
        ("hybrid (RRF)", HYBRID),
    ):
        found, latencies, seconds = await _searches(stub, queries, 1, mode=mode, texts=query_texts)
        row = _row(f"{label} top {TOP_K}, while ingesting", 1, found, latencies, seconds, "")
        row["p99 / idle p99"] = round(percentile(latencies, 99) / percentile(idle[label], 99), 2)
        rows.append(row)
    stop.set()
    written = await ingester
    notes["ingest while searching, chunks/s (BatchUpsertDocuments, 10 documents x 10 chunks)"] = round(
        written / (time.perf_counter() - started)
    )
    return rows, notes


async def _bench(
    stack: Stack, state: Path, chunks: int, reuse: bool, count: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    passages, base, _ = base_vectors(_cranfield())
    vectors, origin = synthesise(base, chunks)
    texts = chunk_texts(_cranfield(), passages, origin)
    url = _database_url(state)
    notes: dict[str, Any] = {"chunks": chunks, "dimension": DIMENSION, "queries": count}
    async with grpc.aio.insecure_channel(stack["retriever"].address) as channel:
        stub = pb_grpc.RetrieverServiceStub(channel)
        conn = await asyncpg.connect(url)
        try:
            loaded = await conn.fetchval(
                "SELECT count(*) FROM chunks WHERE collection_id = (SELECT id FROM collections"
                " WHERE tenant = $1 AND name = $2) AND document_id IN (SELECT id FROM documents"
                " WHERE document_id LIKE 'doc-%')",
                TENANT,
                COLLECTION,
            )
            await conn.execute("DELETE FROM documents WHERE document_id LIKE 'ingest-%'")
        finally:
            await conn.close()
        if not reuse or not loaded or loaded > chunks:
            if loaded:
                await stub.DeleteStoredCollection(
                    pb.DeleteStoredCollectionRequest(tenant=TENANT, name=COLLECTION)
                )
            await stub.CreateStoredCollection(
                pb.CreateStoredCollectionRequest(
                    tenant=TENANT, name=COLLECTION, embedding_model="all-MiniLM-L6-v2", dimension=DIMENSION
                )
            )
            loaded = 0
        if loaded < chunks:
            timings = await _load(url, texts, vectors, loaded)
            label = "load seconds (COPY through the triggers: tsvector, postings, statistics)"
            notes[label + (f", resumed at {loaded} chunks" if loaded else "")] = round(
                timings["load_seconds"]
            )
            notes["load chunks/s"] = round((chunks - loaded) / timings["load_seconds"])
            notes["HNSW build seconds (the retriever's m and ef_construction, 1 parallel worker)"] = round(
                timings["build_seconds"]
            )
        conn = await asyncpg.connect(url)
        try:
            chunk_ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT c.id FROM chunks AS c JOIN documents AS d ON d.id = c.document_id"
                    " WHERE d.document_id LIKE 'doc-%' ORDER BY d.document_id, c.ordinal"
                )
            ]
        finally:
            await conn.close()
        rows, measured = await _measure(stub, url, vectors, texts, chunk_ids, count)
    notes.update(measured)
    notes.update(await _disk(url))
    process = stack["retriever"].process
    assert process is not None
    notes.update(_memory(state, process.pid))
    return rows, notes


def main() -> None:
    """Runs the benchmark and prints and saves the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1_000_000)
    parser.add_argument("--state", type=Path, help="state folder of the embedded PostgreSQL (kept)")
    parser.add_argument("--reuse", action="store_true", help="measure the chunks loaded by an earlier run")
    parser.add_argument(
        "--queries", type=int, default=QUERIES, help="Cranfield queries per measurement (at most 225)"
    )
    args = parser.parse_args()
    state: Path = args.state or Path(f"/tmp/ragline-bench-scale-{args.chunks}")
    state.mkdir(parents=True, exist_ok=True)
    env = {"DATABASE_URL": "", "RETRIEVER_DB_COMMAND_TIMEOUT_SECONDS": "3600"}
    stack = Stack(state=state, services=("retriever",), free_ports=True, env=env)
    stack.start()
    try:
        asyncio.run(_shared_buffers(_database_url(state)))
        stack.stop()
        stack.start()
        rows, notes = asyncio.run(_bench(stack, state, args.chunks, args.reuse, args.queries))
    finally:
        stack.stop()
    write_report(f"bench_scale_{args.chunks}", rows, notes)


async def _shared_buffers(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
