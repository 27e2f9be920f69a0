"""The retriever's use of PostgreSQL: index use, migrations, a server without pgvector, a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import random
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pgvector.asyncpg import register_vector
from test_bm25_engine import postings_read, postings_stored
from test_retriever_service import TENANT

from ragline.devstack import SERVICES, ServiceProcess, Stack
from ragline.embedded_redis import free_port
from ragline.embedded_standby import postmaster_pid
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc
from ragline_retriever.config import RetrieverConfig
from ragline_retriever.migrate import migrate, migrations
from ragline_retriever.search import (
    create_index_sql,
    hybrid_search_sql,
    index_name,
    keyword_hits_sql,
    vector_search_sql,
)

pytestmark = pytest.mark.integration

CHUNKS = 2000
LOCAL_POSTGRES_WITHOUT_PGVECTOR = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def scratch_database(database_url: str, name: str, owner: str = "") -> AsyncIterator[str]:
    """A new empty database `name` on the test server (owned by the role `owner` if given), whose URL the
    body gets; dropped after a body that passed (a failed one leaves it to look at, until the next run)."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}" + (f" OWNER {owner}" if owner else ""))
        yield database_url.replace("/postgres?", f"/{name}?")
        await admin.execute(f"DROP DATABASE {name}")
    finally:
        await admin.close()


async def test_vector_search_uses_the_collections_hnsw_index(
    stub: pb_grpc.RetrieverServiceStub, database_url: str
) -> None:
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name="explained", dimension=8)
    )
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(tenant=TENANT, name="explained-other", dimension=8)
    )
    rng = random.Random(7)
    for name in ("explained", "explained-other"):
        await stub.UpsertDocument(
            pb.UpsertDocumentRequest(
                tenant=TENANT,
                collection=name,
                document_id="many",
                chunks=[
                    common_pb2.ChunkInput(text=f"chunk {i}", embedding=[rng.uniform(-1, 1) for _ in range(8)])
                    for i in range(CHUNKS)
                ],
            )
        )
    conn = await asyncpg.connect(database_url)
    try:
        await register_vector(conn)
        await conn.execute("ANALYZE chunks")
        collection_id = await conn.fetchval(
            "SELECT id FROM collections WHERE tenant = $1 AND name = 'explained'", TENANT
        )
        plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN " + vector_search_sql(collection_id, 8), [0.5] * 8, "explained", 10, TENANT
            )
        )
        assert f"Index Scan using {index_name(collection_id)} on chunks" in plan, plan
        keyword_plan = "\n".join(
            row[0]
            for row in await conn.fetch(
                "EXPLAIN " + keyword_hits_sql(collection_id), [1, 2, 3], "explained", [3.0, 2.0, 1.0], TENANT
            )
        )
        # Unfiltered keyword search ranks in the retriever (`bm25_top_k`); the statement reads the hits by key.
        assert "Seq Scan on chunks" not in keyword_plan, keyword_plan
        # Deleting the collection drops its index with it.
        await stub.DeleteStoredCollection(pb.DeleteStoredCollectionRequest(tenant=TENANT, name="explained"))
        assert await conn.fetchval("SELECT to_regclass($1)", index_name(collection_id)) is None
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_once(database_url: str) -> None:
    async with scratch_database(database_url, "migrations_race") as url:
        first, second = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            everything = [m.version for m in migrations()]
            results = await asyncio.gather(migrate(first), migrate(second))
            assert sorted(results) == [[], everything]
            assert await migrate(first) == []
            assert await first.fetchval("SELECT count(*) FROM ragline_schema_migrations") == len(everything)
            assert await first.fetchval("SELECT to_regclass('chunks') IS NOT NULL")
        finally:
            await first.close()
            await second.close()


async def test_migrating_a_database_from_before_tenants_keeps_its_data_in_the_default_tenant(
    database_url: str,
) -> None:
    async with scratch_database(database_url, "before_tenants") as url:
        conn = await asyncpg.connect(url)
        try:
            # The schema as migrations 0001-0003 left it, with a collection, a document and a job.
            await conn.execute(
                "CREATE TABLE ragline_schema_migrations (version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in migrations():
                if migration.version <= 3:
                    await conn.execute(migration.sql)
                    await conn.execute("INSERT INTO ragline_schema_migrations VALUES ($1)", migration.version)
            collection_id = await conn.fetchval(
                "INSERT INTO collections (name, embedding_model, dimension) VALUES ('docs', 'm', 3) RETURNING id"
            )
            await conn.execute(
                "INSERT INTO documents (collection_id, document_id, content_hash) VALUES ($1, 'a', 'h')",
                collection_id,
            )
            job_id = await conn.fetchval("INSERT INTO ingest_jobs (collection) VALUES ('docs') RETURNING id")

            assert 4 in await migrate(conn)
            assert (
                await conn.fetchval("SELECT tenant FROM collections WHERE id = $1", collection_id)
                == "default"
            )
            assert await conn.fetchval("SELECT tenant FROM ingest_jobs WHERE id = $1", job_id) == "default"
            assert (
                await conn.fetchval("SELECT count(*) FROM documents WHERE collection_id = $1", collection_id)
                == 1
            )
            # Names are unique per tenant now, and a new row must say whose it is.
            await conn.execute(
                "INSERT INTO collections (tenant, name, embedding_model, dimension) VALUES ('acme', 'docs', 'm', 3)"
            )
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO collections (tenant, name, embedding_model, dimension)"
                    " VALUES ('default', 'docs', 'm', 3)"
                )
            with pytest.raises(asyncpg.NotNullViolationError):
                await conn.execute(
                    "INSERT INTO collections (name, embedding_model, dimension) VALUES ('x', 'm', 3)"
                )
        finally:
            await conn.close()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_start_fails_clearly_without_pgvector(tmp_path: Path) -> None:
    if not _reachable("127.0.0.1", 5432):
        pytest.skip("no local PostgreSQL on 127.0.0.1:5432")
    spec = next(s for s in SERVICES if s.name == "retriever")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": LOCAL_POSTGRES_WITHOUT_PGVECTOR,
        "RAGLINE_STATE_DIR": str(tmp_path),
        "RETRIEVER_PORT": str(port),
        "RETRIEVER_METRICS_PORT": str(metrics_port),
    }
    process = ServiceProcess(spec, port, metrics_port, env, tmp_path / "retriever.log")
    process.start()
    assert process.process is not None
    try:
        code = process.process.wait(timeout=60)
    finally:
        process.stop()
    log = process.log_tail()
    assert code != 0, log
    assert "127.0.0.1:5432/test" in log
    assert "pgvector" in log and "postgresql-15-pgvector" in log and "unset DATABASE_URL" in log


def _pg_ctl(data_dir: Path, *args: str) -> None:
    """Runs the embedded server's pg_ctl on `data_dir` as the user that owns it."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin is not None
    pg_ctl = Path(spec.origin).parent / "pginstall" / "bin" / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None
    subprocess.run(
        [str(pg_ctl), "-D", str(data_dir), "-w", *args], check=True, user=user, capture_output=True
    )


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        )


def _wait_for_health(address: str, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _health(address) != status:
        assert time.monotonic() < deadline, f"health did not become {status}"
        time.sleep(0.2)


def test_database_outage_gives_unavailable_then_recovers(tmp_path: Path) -> None:
    stack = Stack(state=tmp_path, services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
    stack.start()
    data_dir = tmp_path / "postgres"
    socket_dir = (data_dir / "postmaster.pid").read_text().splitlines()[4].strip()
    try:
        address = stack["retriever"].address
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.RetrieverServiceStub(channel)
            stub.CreateStoredCollection(
                pb.CreateStoredCollectionRequest(tenant=TENANT, name="durable", dimension=4), timeout=10
            )

            _pg_ctl(data_dir, "-m", "fast", "stop")
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetStoredCollection(
                    pb.GetStoredCollectionRequest(tenant=TENANT, name="durable"), timeout=20
                )
            elapsed = time.monotonic() - started
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            details = raised.value.details() or ""
            assert "database unavailable" in details
            # The driver's text (the server's socket path) goes to the log, under the id the caller gets.
            assert socket_dir not in details and str(tmp_path) not in details
            error_id = re.search(r"error id ([0-9a-f]{16})", details)
            assert error_id is not None and error_id[1] in stack["retriever"].log_tail(100_000)
            assert elapsed < 5, f"took {elapsed:.1f}s to fail"
            _wait_for_health(address, health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)

            _pg_ctl(data_dir, "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(data_dir / "log"), "start")
            _wait_for_health(address, health_pb2.HealthCheckResponse.SERVING, timeout=10)
            got = stub.GetStoredCollection(
                pb.GetStoredCollectionRequest(tenant=TENANT, name="durable"), timeout=10
            )
            assert got.collection.dimension == 4
    finally:
        stack.stop()
    # The retriever stops only the server it started; the stack stops the one restarted here too.
    assert postmaster_pid(data_dir) is None


async def _store_before(
    conn: asyncpg.Connection, version: int, texts: list[str], first_chunk_id: int = 1
) -> int:
    """Applies the migrations before `version` by hand and stores one document with a chunk per
    text (chunk ids from `first_chunk_id` on) in a new collection; returns the collection's id."""
    for migration in migrations():
        if migration.version < version:
            await conn.execute(migration.sql)
    await conn.execute("SELECT setval(pg_get_serial_sequence('chunks', 'id'), $1, false)", first_chunk_id)
    collection: int = await conn.fetchval(
        "INSERT INTO collections (tenant, name, embedding_model, dimension) VALUES ('t', 'c', 'm', 1) RETURNING id"
    )
    document = await conn.fetchval(
        "INSERT INTO documents (collection_id, document_id, content_hash) VALUES ($1, 'd', 'h') RETURNING id",
        collection,
    )
    await conn.executemany(
        "INSERT INTO chunks (document_id, collection_id, ordinal, text, content_hash, embedding)"
        " VALUES ($1, $2, $3, $4, 'h', '[1]')",
        [(document, collection, i, text) for i, text in enumerate(texts)],
    )
    return collection


async def _record_migrations_before(conn: asyncpg.Connection, version: int) -> None:
    """Records the migrations before `version` as applied, as `migrate` would have."""
    await conn.execute("CREATE TABLE ragline_schema_migrations (version integer PRIMARY KEY)")
    await conn.executemany(
        "INSERT INTO ragline_schema_migrations VALUES ($1)",
        [(m.version,) for m in migrations() if m.version < version],
    )


_WING_TEXTS = ["wing flutter at high speed", "flutter of a wing", "heat transfer in a wing", "speed"]


async def _migrate_after_a_change(
    conn: asyncpg.Connection, version: int, change: str, first_chunk_id: int = 1
) -> int:
    """Stores `_WING_TEXTS` before `version`, folds, makes `change` (left unfolded) and migrates to
    `version`; returns the collection's id."""
    collection = await _store_before(conn, version, _WING_TEXTS, first_chunk_id)
    await conn.execute("SELECT ragline_bm25_fold()")
    await conn.execute(change)
    await _record_migrations_before(conn, version)
    assert version in await migrate(conn)
    return collection


async def test_migration_0010_tokenises_existing_chunks_again(database_url: str) -> None:
    # A chunk stored under the `english` configuration gets `ragline_english` terms and length.
    async with scratch_database(database_url, "migrations_retokenise") as url:
        conn = await asyncpg.connect(url)
        try:
            await _store_before(conn, 10, ["Boundary-layer suction."])

            async def terms() -> tuple[list[str], int]:
                lexemes = await conn.fetch("SELECT lexeme, dl FROM chunk_terms ORDER BY lexeme")
                return [row["lexeme"] for row in lexemes], await conn.fetchval(
                    "SELECT term_count FROM chunks"
                )

            assert await terms() == (["boundari", "boundary-lay", "layer", "suction"], 4)
            await _record_migrations_before(conn, 10)
            assert 10 in await migrate(conn)
            assert await terms() == (["boundari", "layer", "suction"], 3)
            assert {row["dl"] for row in await conn.fetch("SELECT dl FROM chunk_terms")} == {3}
        finally:
            await conn.close()


async def test_migration_0012_folds_and_packs_what_is_stored(database_url: str) -> None:
    # Chunks stored before 0012, with statistics deltas not yet folded (they name no block): after
    # it, nothing is left to fold and the postings searches read equal `chunk_terms`.
    async with scratch_database(database_url, "migrations_pack") as url:
        conn = await asyncpg.connect(url)
        try:
            collection = await _migrate_after_a_change(conn, 12, "DELETE FROM chunks WHERE ordinal = 3")
            assert await conn.fetchval("SELECT count(*) FROM bm25_term_deltas") == 0
            stored = await postings_stored(conn, collection)
            assert "speed" in stored  # still held by the first chunk
            assert await postings_read(conn, collection) == stored
            assert await conn.fetchval("SELECT df FROM bm25_term_stats WHERE lexeme = 'speed'") == 1
        finally:
            await conn.close()


async def test_migration_0013_packs_every_block_again_and_keeps_changes_not_folded(database_url: str) -> None:
    # Block rows in 0012's format, chunk ids on both sides of a block boundary, and an update not yet
    # folded: after 0013 the postings searches read equal `chunk_terms`, and still do after the fold
    # and after a change the fold packs.
    async with scratch_database(database_url, "migrations_compact") as url:
        conn = await asyncpg.connect(url)
        try:
            collection = await _migrate_after_a_change(
                conn,
                13,
                "UPDATE chunks SET text = 'wing wing wing speed' WHERE ordinal = 1",
                first_chunk_id=4094,
            )
            stored = await postings_stored(conn, collection)
            assert stored["wing"] == [(4094, 1, 4), (4095, 3, 4), (4096, 1, 3)]
            assert await conn.fetchval("SELECT count(*) FROM bm25_term_deltas") > 0
            assert await postings_read(conn, collection) == stored
            await conn.execute("SELECT ragline_bm25_fold()")
            assert await conn.fetchval("SELECT count(*) FROM bm25_term_deltas") == 0
            assert await postings_read(conn, collection) == stored
            await conn.execute("UPDATE chunks SET text = 'wing heat heat' WHERE ordinal = 2")
            await conn.execute("SELECT ragline_bm25_fold()")
            stored = await postings_stored(conn, collection)
            assert stored["heat"] == [(4096, 2, 3)]
            assert await postings_read(conn, collection) == stored
        finally:
            await conn.close()


async def test_a_small_collection_is_searched_through_its_hnsw_index(database_url: str) -> None:
    # Cranfield's size: with pgvector's COST 1 for the cast and the distance, the index's start-up cost
    # at the retriever's ef_search made a scan of every chunk look cheaper, and the hybrid statement
    # took 10.6 ms instead of 3.7 ms (migration 0011). A database of its own, so the table holds only it.
    async with scratch_database(database_url, "small_collection_plan") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await register_vector(conn)
            collection = await conn.fetchval(
                "INSERT INTO collections (tenant, name, embedding_model, dimension)"
                " VALUES ($1, 'small', 'm', 384) RETURNING id",
                TENANT,
            )
            document = await conn.fetchval(
                "INSERT INTO documents (collection_id, document_id, content_hash) VALUES ($1, 'd', 'h') RETURNING id",
                collection,
            )
            rng = np.random.default_rng(11)
            await conn.executemany(
                "INSERT INTO chunks (document_id, collection_id, ordinal, text, content_hash, embedding)"
                " VALUES ($1, $2, $3, $4, 'h', $5)",
                [(document, collection, i, f"chunk {i}", rng.standard_normal(384)) for i in range(1500)],
            )
            await conn.execute(create_index_sql(collection, 384, m=16, ef_construction=64))
            await conn.execute("ANALYZE chunks")
            await conn.execute(f"SET hnsw.ef_search = {RetrieverConfig().hnsw_ef_search}")
            plan = "\n".join(
                row[0]
                for row in await conn.fetch(
                    "EXPLAIN " + hybrid_search_sql(collection, 384),
                    *([1, 2], "small", 40, rng.standard_normal(384), 60.0, 10, 1.0, 1.0, TENANT),
                )
            )
            assert f"Index Scan using {index_name(collection)} on chunks" in plan, plan
        finally:
            await conn.close()


async def test_a_role_that_does_not_own_pgvector_still_migrates_and_keeps_its_costs(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The documented managed-server setup: a superuser creates the extension, the database's owner
    # migrates. Migration 0011 cannot alter the extension's functions then; it must not stop the start.
    admin = await asyncpg.connect(database_url)
    try:
        # A database a failed run left would still belong to the role.
        await admin.execute("DROP DATABASE IF EXISTS migrations_not_owner")
        await admin.execute("DROP ROLE IF EXISTS ragline_owner")
        await admin.execute("CREATE ROLE ragline_owner LOGIN")
        async with scratch_database(database_url, "migrations_not_owner", owner="ragline_owner") as url:
            superuser = await asyncpg.connect(url)
            try:
                await superuser.execute("CREATE EXTENSION vector")
            finally:
                await superuser.close()
            owner = await asyncpg.connect(url, user="ragline_owner")
            try:
                assert 11 in await migrate(owner)
                costs = await owner.fetch(
                    "SELECT procost FROM pg_proc WHERE oid IN"
                    " ('vector_to_halfvec(vector, integer, boolean)'::regprocedure,"
                    " 'cosine_distance(halfvec, halfvec)'::regprocedure)"
                )
                assert [row["procost"] for row in costs] == [1.0, 1.0]
                # The retriever's log says what was skipped and what the extension's owner can run.
                assert "could not set the cost of pgvector's distance functions" in caplog.text
            finally:
                await owner.close()
        await admin.execute("DROP ROLE ragline_owner")
    finally:
        await admin.close()
