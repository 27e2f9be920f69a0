"""The BM25 engine: statistics kept by the write path (migration 0008), block rows kept by the fold
(migration 0012), and the retriever's pruned exact top-k (`bm25_top_k`).

Against the session's real retriever and its PostgreSQL: the maintained statistics (folded rows
plus unfolded deltas) must equal a recount from `chunks` and `chunk_terms` after every kind of
write, before and after folding, and so must the postings searches read; `bm25_top_k` must return
exactly what scoring every posting returns; and concurrent writers must not wait for each other
on the statistics.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from test_retriever_service import TENANT, axis, chunk

from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever import bm25_top_k
from ragline_retriever.posting_cache import LOOKUPS, PostingCache
from ragline_retriever.search import keyword_search_sql

pytestmark = pytest.mark.integration

NewCollection = Callable[..., Awaitable[str]]
# Made-up words drawn with Zipf-like frequencies: a few in most chunks, most in a handful.
VOCABULARY = [f"w{i}x" for i in range(400)]
FREQUENCIES = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _collection_id(conn: asyncpg.Connection, name: str) -> int:
    found: int = await conn.fetchval(
        "SELECT id FROM collections WHERE tenant = $1 AND name = $2", TENANT, name
    )
    return found


async def _maintained(
    conn: asyncpg.Connection, collection_id: int
) -> tuple[tuple[float, float], dict[str, float]]:
    """N and the average length, and every term's df, as searches read them."""
    lexemes = [r["lexeme"] for r in await conn.fetch("SELECT DISTINCT lexeme FROM chunk_terms")]
    collection = await conn.fetchrow("SELECT n, avgdl FROM ragline_bm25_collection($1)", collection_id)
    terms = await conn.fetch(
        "SELECT lexeme, df FROM ragline_bm25_terms($1, $2, 1.5, 0.75)", collection_id, lexemes
    )
    return (collection["n"], collection["avgdl"]), {r["lexeme"]: r["df"] for r in terms}


async def _recounted(
    conn: asyncpg.Connection, collection_id: int
) -> tuple[tuple[float, float], dict[str, float]]:
    """N, the average length and every term's df, counted from the chunks and their postings."""
    row = await conn.fetchrow(
        "SELECT count(*)::float8 AS n, coalesce(avg(term_count), 0)::float8 AS avgdl FROM chunks WHERE collection_id = $1",
        collection_id,
    )
    terms = await conn.fetch(
        "SELECT lexeme, count(*)::float8 AS df FROM chunk_terms WHERE collection_id = $1 GROUP BY lexeme",
        collection_id,
    )
    return (row["n"], pytest.approx(row["avgdl"])), {r["lexeme"]: r["df"] for r in terms}


async def postings_stored(
    conn: asyncpg.Connection, collection_id: int
) -> dict[str, list[tuple[int, int, int]]]:
    """Every term's postings in `chunk_terms`: (chunk id, tf, dl), in chunk id order."""
    rows = await conn.fetch(
        "SELECT lexeme, chunk_id, tf, dl FROM chunk_terms WHERE collection_id = $1 ORDER BY lexeme, chunk_id",
        collection_id,
    )
    found: dict[str, list[tuple[int, int, int]]] = {}
    for r in rows:
        found.setdefault(r["lexeme"], []).append((r["chunk_id"], r["tf"], r["dl"]))
    return found


async def postings_read(
    conn: asyncpg.Connection, collection_id: int
) -> dict[str, list[tuple[int, int, int]]]:
    """Every term's postings as searches read them (block rows, and `chunk_terms` where deltas are left)."""
    lexemes = [r["lexeme"] for r in await conn.fetch("SELECT DISTINCT lexeme FROM chunk_terms")]
    found = await bm25_top_k.read_postings(conn, collection_id, lexemes)
    return {
        lexeme: list(zip(p.ids.tolist(), map(int, p.tfs), map(int, p.dls), strict=True))
        for lexeme, p in found.items()
    }


def _text(rng: random.Random, length: int) -> str:
    return " ".join(rng.choices(VOCABULARY, FREQUENCIES, k=length))


async def _upsert_text(
    stub: pb_grpc.RetrieverServiceStub, name: str, document: str, texts: list[str]
) -> None:
    """Stores `document` in collection `name` with one chunk per text."""
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT, collection=name, document_id=document, chunks=[chunk(t, axis(0)) for t in texts]
        )
    )


async def test_statistics_equal_a_recount_after_every_kind_of_write(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection, conn: asyncpg.Connection
) -> None:
    name = await new_collection()
    collection_id = await _collection_id(conn, name)
    rng = random.Random(7)

    async def upsert(document: str, chunks: int) -> None:
        await _upsert_text(stub, name, document, [_text(rng, rng.randint(1, 30)) for _ in range(chunks)])

    async def check() -> None:
        assert await _maintained(conn, collection_id) == await _recounted(conn, collection_id)
        assert await postings_read(conn, collection_id) == await postings_stored(conn, collection_id)

    for document in "abcd":
        await upsert(document, 5)
    await check()
    await conn.execute("SELECT ragline_bm25_fold()")
    await check()
    await upsert("a", 3)  # updates three chunks, deletes two
    await upsert("b", 8)  # updates five, inserts three
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="c")
    )
    await check()  # folded rows plus the deltas since
    await conn.execute("SELECT ragline_bm25_fold()")
    await check()
    assert (
        await conn.fetchval("SELECT count(*) FROM bm25_term_deltas WHERE collection_id = $1", collection_id)
        == 0
    )
    # A deleted collection leaves no statistics behind once folded.
    await stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name=name))
    await conn.execute("SELECT ragline_bm25_fold()")
    tables = (
        "bm25_collection_stats",
        "bm25_term_stats",
        "bm25_collection_deltas",
        "bm25_term_deltas",
        "bm25_blocks",
    )
    for table in tables:
        assert (
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE collection_id = $1", collection_id) == 0
        )


@pytest.fixture(scope="module")
async def zipf(stub: pb_grpc.RetrieverServiceStub, database_url: str) -> str:
    """A collection of 1,500 chunks of Zipf-distributed words, its statistics half folded."""
    name = "bm25-zipf"
    await stub.CreateStoredCollection(pb.CreateStoredCollectionRequest(tenant=TENANT, name=name, dimension=8))
    rng = random.Random(11)
    for batch in range(15):
        if batch == 8:
            folder = await asyncpg.connect(database_url)
            await folder.execute("SELECT ragline_bm25_fold()")
            await folder.close()
        requests = [
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id=f"d{batch}-{i}",
                chunks=[chunk(_text(rng, rng.randint(3, 60)), axis(i % 8)) for _ in range(10)],
            )
            for i in range(10)
        ]
        await stub.BatchUpsertDocuments(
            pb.BatchUpsertDocumentsRequest(tenant=TENANT, collection=name, requests=requests)
        )
    return name


async def _top_k(
    conn: asyncpg.Connection,
    collection_id: int,
    query: str,
    k: int,
    cache: PostingCache | None = None,
    **bound: float,
) -> list[tuple[int, float]]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = await bm25_top_k.top_k(conn, collection_id, query, k, 1.2, 0.75, cache=cache, **bound)
    return list(zip(found.ids.tolist(), found.scores.tolist(), strict=True))


async def _full_scan(
    conn: asyncpg.Connection, collection_id: int, name: str, query: str, k: int
) -> list[tuple[int, float]]:
    # A filter that keeps everything scores every posting.
    rows = await conn.fetch(keyword_search_sql(collection_id, "TRUE"), query, name, k, 1.2, 0.75, TENANT)
    return [(r["id"], r["score"]) for r in rows if r["id"] is not None]


def _queries(rng: random.Random, count: int) -> list[str]:
    """Common and rare words together, as real queries mix them."""
    return [
        " ".join(
            rng.sample(VOCABULARY[:20], rng.randint(0, 3)) + rng.sample(VOCABULARY[20:], rng.randint(1, 5))
        )
        for _ in range(count)
    ]


def _assert_same(found: list[tuple[int, float]], expected: list[tuple[int, float]], query: str) -> None:
    assert [i for i, _ in found] == [i for i, _ in expected], query
    assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-9)


# No cache; one that holds every term; one that holds a few (terms read whole enter it, others
# are looked up), so that searches mix terms held and terms read.
CACHE_SIZES = pytest.mark.parametrize(
    "cache_bytes", [0, 1 << 30, 3_000], ids=["read", "cached", "small-cache"]
)


@CACHE_SIZES
@pytest.mark.parametrize("top_k", [1, 10, 40])
async def test_pruned_top_k_equals_a_full_scan(
    zipf: str, conn: asyncpg.Connection, top_k: int, cache_bytes: int
) -> None:
    collection_id = await _collection_id(conn, zipf)
    cache = PostingCache(cache_bytes) if cache_bytes else None
    for query in _queries(random.Random(top_k), 40):
        _assert_same(
            await _top_k(conn, collection_id, query, top_k, cache),
            await _full_scan(conn, collection_id, zipf, query, top_k),
            query,
        )


@CACHE_SIZES
async def test_top_k_is_exact_whatever_the_fold_has_seen(
    stub: pb_grpc.RetrieverServiceStub,
    new_collection: NewCollection,
    conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    cache_bytes: int,
) -> None:
    # Postings read from block rows, from `chunk_terms` (deltas left), and from both, across writes
    # that insert, update and delete; the seed threshold and the many-candidates path forced too.
    # Cached: one cache for every check, so each must see what changed since the one before.
    cache = PostingCache(cache_bytes) if cache_bytes else None
    name = await new_collection()
    collection_id = await _collection_id(conn, name)
    rng = random.Random(5)
    queries = _queries(rng, 15)

    async def upsert(document: str, chunks: int) -> None:
        await _upsert_text(stub, name, document, [_text(rng, rng.randint(3, 40)) for _ in range(chunks)])

    async def check() -> None:
        for query in queries:
            _assert_same(
                await _top_k(conn, collection_id, query, 10, cache),
                await _full_scan(conn, collection_id, name, query, 10),
                query,
            )

    monkeypatch.setattr(bm25_top_k, "SEED_POSTINGS", 30)
    monkeypatch.setattr(bm25_top_k, "LOOKUP_COST_POSTINGS", 0)  # lookups rather than block rows
    for document in range(12):
        await upsert(f"d{document}", 20)
    await check()  # nothing folded
    await conn.execute("SELECT ragline_bm25_fold()")
    await check()  # all folded
    await upsert("d1", 25)
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="d2")
    )
    await check()  # folded, with updates and deletes since
    monkeypatch.setattr(bm25_top_k, "LOOKUP_COST_POSTINGS", 10**9)  # block rows rather than lookups
    await check()
    await conn.execute("SELECT ragline_bm25_fold()")
    await check()


# The fold's advisory lock (migration 0008): a session that holds it is the only one that folds.
FOLD_LOCK = 7450625812580609


async def test_cached_terms_are_read_again_only_where_the_fold_changed_their_blocks(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection, conn: asyncpg.Connection
) -> None:
    # This connection folds when the test says, and the retriever's periodic fold not at all.
    await conn.execute("SELECT pg_advisory_lock($1)", FOLD_LOCK)
    name = await new_collection()
    collection_id = await _collection_id(conn, name)
    # Chunks in two blocks of 4,096 ids: the sequence jumps a block between the documents.
    await _upsert_text(stub, name, "a", ["alpha beta", "alpha gamma", "beta delta"])
    await conn.execute(
        "SELECT setval(pg_get_serial_sequence('chunks', 'id'), nextval(pg_get_serial_sequence('chunks', 'id')) + 4096)"
    )
    await _upsert_text(stub, name, "b", ["beta zeta"])
    await conn.execute("SELECT ragline_bm25_fold()")
    cache = PostingCache(1 << 20)
    blocks_read: list[list[int]] = []
    blocks_packed: list[list[tuple[str, int]]] = []

    class Recording:
        """The connection, recording the blocks of each read of some block rows, and of each read
        of blocks with deltas left."""

        async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
            if sql == bm25_top_k._SOME_BLOCKS_SQL:
                blocks_read.append(list(args[2]))
            if sql == bm25_top_k._PACKED_SQL:
                blocks_packed.append(list(zip(args[1], args[2], strict=True)))
            return await conn.fetch(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(conn, name)

    async def looked_up(query: str) -> tuple[float, ...]:
        before = [LOOKUPS.labels(result)._value.get() for result in ("hit", "stale", "miss")]
        found = await _top_k(Recording(), collection_id, query, 10, cache)  # type: ignore[arg-type]
        _assert_same(found, await _full_scan(conn, collection_id, name, query, 10), query)
        return tuple(
            LOOKUPS.labels(r)._value.get() - b for r, b in zip(("hit", "stale", "miss"), before, strict=True)
        )

    assert await looked_up("alpha beta") == (0, 0, 2)
    assert await looked_up("alpha beta") == (2, 0, 0)
    # A new chunk with beta in the second block: until the fold, that block is read from
    # `chunk_terms` in place of the cached one; the fold packs it again, and beta's entry is
    # brought up to date by reading that block alone.
    await _upsert_text(stub, name, "c", ["beta epsilon"])
    last_block = await conn.fetchval(
        "SELECT max(id) >> 12 FROM chunks WHERE collection_id = $1", collection_id
    )
    assert await looked_up("alpha beta") == (2, 0, 0)
    assert blocks_packed == [[("beta", last_block)]]
    # That block is held with the term until another write changes it.
    assert await looked_up("alpha beta") == (2, 0, 0)
    assert len(blocks_packed) == 1
    await _upsert_text(stub, name, "d", ["beta beta eta"])
    assert await looked_up("alpha beta") == (2, 0, 0)
    assert blocks_packed[1:] == [[("beta", last_block)]]
    await conn.execute("SELECT ragline_bm25_fold()")
    assert await looked_up("alpha beta") == (1, 1, 0)
    assert blocks_read == [[last_block]]
    assert await looked_up("alpha beta") == (2, 0, 0)
    # Deleting the first document empties alpha's only block and changes beta's first one.
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=name, document_id="a")
    )
    await conn.execute("SELECT ragline_bm25_fold()")
    assert await looked_up("alpha beta") == (0, 1, 0)  # alpha is in no chunk now
    assert await looked_up("beta") == (1, 0, 0)
    await conn.execute("SELECT pg_advisory_unlock($1)", FOLD_LOCK)


async def test_bounded_effort_reads_at_most_its_postings_and_returns_exact_scores(
    zipf: str, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every term's postings would fit the seed at this size: a small seed, and primary-key lookups
    # only, so that every posting list read is counted below.
    monkeypatch.setattr(bm25_top_k, "SEED_POSTINGS", 30)
    monkeypatch.setattr(bm25_top_k, "LOOKUP_COST_POSTINGS", 0)
    read: list[int] = []
    read_postings = bm25_top_k.read_postings

    async def counted(*args: Any) -> dict[str, bm25_top_k.Postings]:
        found = await read_postings(*args)
        read.append(sum(p.ids.size for p in found.values()))
        return found

    monkeypatch.setattr(bm25_top_k, "read_postings", counted)
    looked_up: list[int] = []
    postings_of = bm25_top_k._Query.postings_of

    async def counted_lookups(query: Any, terms: Any, ids: Any) -> dict[str, bm25_top_k.Postings]:
        looked_up.append(ids.size)
        return await postings_of(query, terms, ids)

    monkeypatch.setattr(bm25_top_k._Query, "postings_of", counted_lookups)
    collection_id = await _collection_id(conn, zipf)
    query = "w0x w1x w2x w150x w300x"
    assert (
        await conn.fetchval(
            "SELECT df FROM bm25_term_stats WHERE collection_id = $1 AND lexeme = 'w0x'", collection_id
        )
        > 200
    )
    exact = dict(await _full_scan(conn, collection_id, zipf, query, 1500))
    bounded = await _top_k(conn, collection_id, query, 10, max_postings=60)
    assert 0 < sum(read) <= 60
    # Past the bound only the leaders are completed, once for the threshold and once after the
    # essential terms, not every chunk that holds an essential term.
    assert max(looked_up) <= 10 * bm25_top_k.THRESHOLD_CHUNKS_PER_RESULT
    assert len(bounded) == 10
    for chunk_id, score in bounded:
        assert score == pytest.approx(exact[chunk_id], rel=1e-9)


async def test_concurrent_writers_do_not_wait_on_the_statistics(
    stub: pb_grpc.RetrieverServiceStub, new_collection: NewCollection, database_url: str
) -> None:
    name = await new_collection()
    for document in ("one", "two"):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT, collection=name, document_id=document, chunks=[chunk("seed", axis(0))]
            )
        )
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        collection_id = await _collection_id(first, name)
        insert = (
            "INSERT INTO chunks (document_id, collection_id, ordinal, text, content_hash, embedding)"
            " SELECT id, collection_id, 1, $3, md5($3), $4::vector FROM documents"
            " WHERE collection_id = $1 AND document_id = $2"
        )
        vector = str(axis(1))
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        await second_tx.start()
        await first.execute(insert, collection_id, "one", "shared words here", vector)
        # The second writer adds the same terms while the first is still open: no lock to wait on.
        await asyncio.wait_for(second.execute(insert, collection_id, "two", "shared words there", vector), 5)
        await first_tx.commit()
        await second_tx.commit()
        assert await _maintained(first, collection_id) == await _recounted(first, collection_id)
    finally:
        await first.close()
        await second.close()
