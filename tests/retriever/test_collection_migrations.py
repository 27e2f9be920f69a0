"""Moving a collection to another embedding model against a real retriever and PostgreSQL.

The test plays the gateway's workers: it claims the migration job's documents, "embeds" them with
a second model (vectors of another dimension, so that a mix-up cannot go unnoticed) and stores them.
Writes to the collection during the migration must reach the new vectors before the switch, the
switch must happen at one commit, and a cancelled migration must leave the collection as it was.
"""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
from test_retriever_service import TENANT

from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as queue_pb
from ragline.v1 import ingest_queue_service_pb2_grpc as queue_grpc
from ragline.v1 import retriever_service_pb2 as pb
from ragline.v1 import retriever_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

COLLECTION = "migrating"


def _old(text: str) -> list[float]:
    """A model-a vector (8 dimensions)."""
    return [1.0] * 7 + [float(len(text))]


def _new(text: str) -> list[float]:
    """A model-b vector (4 dimensions): the text's length decides the nearest, so rankings are known."""
    return [1.0, float(len(text)), 0.5, 0.25]


async def _upsert(stub: pb_grpc.RetrieverServiceStub, document_id: str, text: str) -> None:
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=TENANT,
            collection=COLLECTION,
            document_id=document_id,
            chunks=[common_pb2.ChunkInput(text=text, token_count=2, embedding=_old(text))],
            embedding_model="model-a",
        )
    )


async def _claim(queue: queue_grpc.IngestQueueServiceStub) -> list[queue_pb.ClaimedDocument]:
    reply = await queue.ClaimIngestWork(
        queue_pb.ClaimIngestWorkRequest(max_documents=100, lease_seconds=60, max_attempts=3)
    )
    return list(reply.documents)


async def _store_new(stub: pb_grpc.RetrieverServiceStub, claimed: queue_pb.ClaimedDocument) -> None:
    """Stores a claimed migration document as a worker does, with model-b vectors."""
    await stub.UpsertDocument(
        pb.UpsertDocumentRequest(
            tenant=claimed.tenant,
            collection=claimed.collection,
            document_id=claimed.document.document_id,
            metadata=claimed.document.metadata,
            content_hash=claimed.content_hash,
            chunks=[
                common_pb2.ChunkInput(
                    text=c.text, token_count=c.token_count, embedding=_new(c.text), metadata=c.metadata
                )
                for c in claimed.chunks
            ],
            claim=claimed.claim,
            embedding_model=claimed.migration.target_embedding_model,
        )
    )


async def _job(queue: queue_grpc.IngestQueueServiceStub, job_id: str) -> common_pb2.IngestJob:
    reply = await queue.GetStoredIngestJob(queue_pb.GetStoredIngestJobRequest(tenant=TENANT, job_id=job_id))
    job: common_pb2.IngestJob = reply.job
    return job


async def _collection(stub: pb_grpc.RetrieverServiceStub) -> common_pb2.Collection:
    reply = await stub.GetStoredCollection(pb.GetStoredCollectionRequest(tenant=TENANT, name=COLLECTION))
    collection: common_pb2.Collection = reply.collection
    return collection


async def _search(stub: pb_grpc.RetrieverServiceStub, vector: list[float], model: str = "") -> list[str]:
    reply = await stub.SearchChunks(
        pb.SearchChunksRequest(
            tenant=TENANT,
            collection=COLLECTION,
            query_embedding=vector,
            top_k=10,
            mode=common_pb2.SEARCH_MODE_VECTOR,
            embedding_model=model,
        )
    )
    return [hit.document_id for hit in reply.hits]


async def _until(condition: object, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


async def _internal_collections(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM collections WHERE name LIKE '~%'")
        return count
    finally:
        await conn.close()


async def test_a_migration_copies_writes_made_meanwhile_and_switches_at_one_commit(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, database_url: str
) -> None:
    await stub.CreateStoredCollection(
        pb.CreateStoredCollectionRequest(
            tenant=TENANT, name=COLLECTION, embedding_model="model-a", dimension=8
        )
    )
    texts = {f"doc-{i}": "x" * (i + 1) for i in range(5)}
    for document_id, text in texts.items():
        await _upsert(stub, document_id, text)

    reply = await stub.MigrateStoredCollection(
        pb.MigrateStoredCollectionRequest(
            tenant=TENANT, name=COLLECTION, embedding_model="model-b", dimension=4
        )
    )

    job = reply.job
    assert job.migration.source_embedding_model == "model-a"
    assert job.migration.target_embedding_model == "model-b" and job.migration.target_dimension == 4
    assert job.total_documents == 5 and job.collection == COLLECTION
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.MigrateStoredCollection(
            pb.MigrateStoredCollectionRequest(
                tenant=TENANT, name=COLLECTION, embedding_model="model-c", dimension=4
            )
        )
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await stub.ListStoredCollections(pb.ListStoredCollectionsRequest(tenant=TENANT))
    assert all(not c.name.startswith("~") for c in listed.collections)  # the target is hidden

    claimed = await _claim(queue)
    assert sorted(c.document.document_id for c in claimed) == sorted(texts)
    assert all(c.migration.target_embedding_model == "model-b" for c in claimed)
    assert {c.document.document_id: c.chunks[0].text for c in claimed} == texts
    # Writes while the job runs: a new document, a changed one, a deleted one.
    await _upsert(stub, "doc-new", "y" * 9)
    await _upsert(stub, "doc-1", "z" * 7)
    await stub.DeleteStoredDocument(
        pb.DeleteStoredDocumentRequest(tenant=TENANT, collection=COLLECTION, document_id="doc-0")
    )
    for item in claimed:
        await _store_new(stub, item)

    # Not switched yet: the round that copies what changed meanwhile comes first.
    assert (await _collection(stub)).embedding_model == "model-a"
    old_ranking = await _search(stub, _old("x" * 3), "model-a")  # the searcher remembers this collection
    assert sorted(old_ranking) == ["doc-1", "doc-2", "doc-3", "doc-4", "doc-new"]
    second: list[queue_pb.ClaimedDocument] = []

    async def second_round() -> bool:
        second.extend(await _claim(queue))
        return bool(second)

    await _until(second_round, "the catch-up round queues the documents written meanwhile")
    assert sorted(c.document.document_id for c in second) == ["doc-1", "doc-new"]
    assert (await _job(queue, job.job_id)).total_documents == 7
    for item in second:
        await _store_new(stub, item)

    async def switched() -> bool:
        return (await _collection(stub)).embedding_model == "model-b"

    await _until(switched, "the collection switches to model-b")
    collection = await _collection(stub)
    assert collection.dimension == 4 and collection.document_count == 5
    # The new vectors rank by text length: "xxx" (doc-2) first, then ever longer texts.
    assert await _search(stub, _new("x" * 3), "model-b") == ["doc-2", "doc-3", "doc-4", "doc-1", "doc-new"]
    # A query embedded with the old model just before the switch is refused, not ranked against the new vectors.
    with pytest.raises(grpc.aio.AioRpcError) as stale_query:
        await _search(stub, [1.0, 3.0, 0.5, 0.25], "model-a")
    assert stale_query.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EMBEDDING_MODEL_CHANGED" in str(stale_query.value.trailing_metadata())
    finished = await _job(queue, job.job_id)
    assert finished.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    assert "now serves vectors of model-b" in finished.status_message
    # A worker that embedded with the old model before the switch cannot store its vectors after it.
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await _upsert(stub, "doc-late", "late")
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EMBEDDING_MODEL_CHANGED" in str(late.value.trailing_metadata())
    await _until(lambda: _no_internal(database_url), "the retired collection is deleted")


async def _no_internal(database_url: str) -> bool:
    return await _internal_collections(database_url) == 0


async def test_a_cancelled_migration_leaves_the_collection_as_it_was(
    stub: pb_grpc.RetrieverServiceStub, queue: queue_grpc.IngestQueueServiceStub, database_url: str
) -> None:
    before = await _collection(stub)
    ranking = await _search(stub, _new("x" * 2))
    reply = await stub.MigrateStoredCollection(
        pb.MigrateStoredCollectionRequest(
            tenant=TENANT, name=COLLECTION, embedding_model="model-c", dimension=6
        )
    )
    claimed = await _claim(queue)
    assert len(claimed) == before.document_count
    assert await _internal_collections(database_url) == 1

    cancelled = await queue.CancelStoredIngestJob(
        queue_pb.CancelStoredIngestJobRequest(
            tenant=TENANT, job_id=reply.job.job_id, reason="changed my mind"
        )
    )

    assert cancelled.job.state == common_pb2.INGEST_JOB_STATE_CANCELLED
    assert await _internal_collections(database_url) == 0
    # A worker that still holds a document of the cancelled migration stores nothing.
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await _store_new(stub, claimed[0])
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    after = await _collection(stub)
    assert (after.embedding_model, after.dimension, after.document_count, after.generation) == (
        before.embedding_model,
        before.dimension,
        before.document_count,
        before.generation,
    )
    assert await _search(stub, _new("x" * 2)) == ranking


async def test_a_migration_to_the_model_in_use_or_of_no_collection_is_refused(
    stub: pb_grpc.RetrieverServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as same:
        await stub.MigrateStoredCollection(
            pb.MigrateStoredCollectionRequest(
                tenant=TENANT, name=COLLECTION, embedding_model="model-b", dimension=4
            )
        )
    assert same.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already holds vectors of model-b" in (same.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.MigrateStoredCollection(
            pb.MigrateStoredCollectionRequest(tenant=TENANT, name="nowhere", embedding_model="m", dimension=4)
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as other_tenant:
        await stub.MigrateStoredCollection(
            pb.MigrateStoredCollectionRequest(
                tenant="other", name=COLLECTION, embedding_model="m", dimension=4
            )
        )
    assert other_tenant.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as no_model:
        await stub.MigrateStoredCollection(
            pb.MigrateStoredCollectionRequest(tenant=TENANT, name=COLLECTION, embedding_model="", dimension=4)
        )
    assert no_model.value.code() == grpc.StatusCode.INVALID_ARGUMENT
