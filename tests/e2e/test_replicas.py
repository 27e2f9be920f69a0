"""Replicas of every service: two embedders, two retrievers and two gateways on one Redis and one ingest queue.

kill -9 one embedder, one retriever and then the gateway whose workers run an ingest job, while Searches
stream through the other gateway: no Search fails (the channels send a call that met a dead replica to
a live one), the job completes, and every document is stored exactly once. Caches and published
collection state written through one gateway are seen by the other at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from ingest_checks import assert_stored_once, note_text

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import ServiceProcess, Stack
from ragline.embedded_standby import postmaster_pid
from ragline.v1 import common_pb2
from ragline.v1 import gateway_service_pb2 as gw

pytestmark = pytest.mark.integration

DOCUMENTS = 120
QUERIES = ("rivers in spring", "volcano detail", "orchards and bridges", "comets glaciers", "desert harbours")


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        # Empty REDIS_URL and DATABASE_URL select the embedded servers, whatever the machine's environment says.
        "REDIS_URL": "",
        "DATABASE_URL": "",
        # Short leases, so that a killed gateway's documents are taken over within seconds.
        "GATEWAY_INGEST_LEASE_SECONDS": "8",
        "GATEWAY_INGEST_RETRY_SECONDS": "0.2",
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
    }
    stack = Stack(
        state=tmp_path_factory.mktemp("replicas-state"),
        free_ports=True,
        env=env,
        services=("embedder", "retriever", "gateway"),
        replicas={"embedder": 2, "retriever": 2, "gateway": 2},
    )
    stack.start()
    yield stack
    stack.stop()
    # The test kills a retriever with SIGKILL, so it never lets go of the shared embedded PostgreSQL:
    # the stack stops it all the same, and nothing is left running after the tests.
    assert postmaster_pid(stack.state / "postgres") is None


@pytest.fixture(scope="module")
async def clients(replicated: Stack) -> AsyncIterator[list[RaglineClient]]:
    """A client of each gateway replica."""
    gateways = replicated.instances["gateway"]
    async with (
        RaglineClient(gateways[0].address, timeout=60, api_key=replicated.api_key) as first,
        RaglineClient(gateways[1].address, timeout=60, api_key=replicated.api_key) as second,
    ):
        yield [first, second]


def test_the_gateways_dial_every_replica(replicated: Stack) -> None:
    for gateway in replicated.instances["gateway"]:
        for name in ("embedder", "retriever"):
            addresses = [proc.address for proc in replicated.instances[name]]
            assert gateway.env[f"{name.upper()}_ADDR"] == "ipv4:" + ",".join(addresses)


async def test_caches_and_collection_state_are_shared_by_the_gateways(clients: list[RaglineClient]) -> None:
    one, other = clients
    await one.create_collection("shared")
    await other.ingest(
        [DocumentToIngest("kites.txt", b"Kites fly over Weifang every April.")], collection="shared"
    )
    assert [h.document_id for h in (await one.search("kite festival", collection="shared")).hits] == [
        "kites.txt"
    ]
    cached = await one.search("kite festival", collection="shared")
    assert cached.cache_layer == gw.CACHE_LAYER_RETRIEVAL
    # A change through the other gateway moves the collection's generation: no gateway serves the old result.
    await other.ingest([DocumentToIngest("kites.txt", b"Tea is picked in spring.")], collection="shared")
    for client in clients:
        hits = (await client.search("kite festival", collection="shared")).hits
        assert [h.text for h in hits] == ["Tea is picked in spring."]
    await other.delete_document("kites.txt", collection="shared")
    assert not (await one.search("kite festival", collection="shared")).hits
    await other.delete_collection("shared")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await one.search("kite festival", collection="shared")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def _search_until(
    client: RaglineClient, done: asyncio.Event, succeeded: list[int], failures: list[str]
) -> None:
    """Searches one after another, bypassing the caches so that every one reaches the embedder and the
    retriever, until `done`; counts successes in `succeeded[0]` and records each failure."""
    while not done.is_set():
        query = QUERIES[succeeded[0] % len(QUERIES)]
        try:
            await client.search(query, collection="replicas", cache_policy=gw.CACHE_POLICY_BYPASS, timeout=30)
            succeeded[0] += 1
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{exc.code().name}: {exc.details()}")


async def _wait_done(client: RaglineClient, job_id: str, documents: int) -> None:
    for _ in range(1200):  # at most a minute
        if (await client.get_ingest_job(job_id)).done_documents >= documents:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {documents} documents")


def _kill(proc: ServiceProcess, method: str) -> None:
    """kill -9 of a replica that has been answering calls of `method` (so round robin reached it)."""
    assert proc.metric("ragline_grpc_server_handled_total", {"grpc_method": method}) > 0
    proc.kill()
    assert proc.process is not None and proc.process.returncode == -9


async def test_replicas_killed_mid_way_lose_no_search_and_no_document(
    replicated: Stack, clients: list[RaglineClient]
) -> None:
    worker_gateway, serving_gateway = clients
    texts = {f"replica-{i:03d}.txt": note_text(i) for i in range(DOCUMENTS)}
    await serving_gateway.ingest([DocumentToIngest("seed.txt", note_text(1).encode())], collection="replicas")
    # Both gateways' workers claim from the one queue; killing the first leaves its leased documents behind.
    job = await worker_gateway.create_ingest_job(
        [DocumentToIngest(name, text.encode(), "text/plain") for name, text in texts.items()],
        collection="replicas",
    )
    done, succeeded, failures = asyncio.Event(), [0], list[str]()
    searches = asyncio.create_task(_search_until(serving_gateway, done, succeeded, failures))
    try:
        await _wait_done(worker_gateway, job.job_id, 10)
        _kill(replicated.instances["embedder"][1], "Embed")
        _kill(replicated.instances["retriever"][1], "SearchChunks")
        at_kill = succeeded[0]
        await _wait_done(worker_gateway, job.job_id, 40)
        _kill(replicated.instances["gateway"][0], "GetIngestJob")
        progress = await serving_gateway.get_ingest_job(job.job_id)
        assert progress.done_documents < DOCUMENTS, (
            "the job finished before the gateway's kill; make it longer"
        )
        job = await serving_gateway.wait_for_ingest_job(job.job_id, poll_seconds=0.5, timeout=120)
    finally:
        done.set()
        await searches
    assert failures == []
    assert succeeded[0] > at_kill + 10, "too few Searches ran after the kills to show they survived them"
    assert job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED, job
    assert job.done_documents + job.skipped_documents == DOCUMENTS
    texts["seed.txt"] = note_text(1)
    await assert_stored_once(serving_gateway, replicated.instances["retriever"][0].address, "replicas", texts)
