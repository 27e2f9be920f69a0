"""Crash safety: kill -9 the process running the ingest workers mid-job, start it again, and check the result.

The job must complete, and every document must be stored exactly once with exactly its chunks:
none missing, none doubled. The stack's lease is short (GATEWAY_INGEST_LEASE_SECONDS in
conftest), so the dead workers' documents are taken over within seconds.
"""

from __future__ import annotations

import asyncio

import pytest
from ingest_checks import assert_stored_once, note_text

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2

COLLECTION = "crash"
DOCUMENTS = 160

pytestmark = pytest.mark.integration


async def test_a_job_survives_kill_9_of_its_workers_and_stores_every_document_once(
    stack: Stack, client: RaglineClient
) -> None:
    texts = {f"crash-{i:03d}.txt": note_text(i) for i in range(DOCUMENTS)}
    job = await client.create_ingest_job(
        [DocumentToIngest(name, text.encode(), "text/plain") for name, text in texts.items()],
        collection=COLLECTION,
    )
    for _ in range(2400):  # at most two minutes
        progress = await client.get_ingest_job(job.job_id)
        if progress.done_documents >= 10:
            break
        await asyncio.sleep(0.05)
    gateway = stack["gateway"]

    gateway.kill()

    assert progress.done_documents < DOCUMENTS, "the job finished before the kill; make it longer"
    # The dead workers held leases: the retriever's gauge (read every 2 s) sees documents still running.
    running = 0.0
    for _ in range(50):
        running = stack["retriever"].metric("ragline_ingest_queue_documents", {"state": "running"})
        if running:
            break
        await asyncio.sleep(0.1)
    assert running > 0, "no document was leased when the workers died, so no lease was taken over"
    gateway.start()
    await asyncio.to_thread(gateway.wait_healthy, 120)
    # The client's channel saw the gateway refuse connections and may still be in its reconnect
    # backoff, where calls fail at once with UNAVAILABLE: wait until it has reconnected.
    await asyncio.wait_for(client._channel.channel_ready(), 60)
    job = await client.wait_for_ingest_job(job.job_id, poll_seconds=0.5, timeout=300)

    assert job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED, job
    assert job.done_documents + job.skipped_documents == DOCUMENTS
    # The client's key is the stack's admin key of tenant default, whose collection this is.
    await assert_stored_once(client, stack["retriever"].address, COLLECTION, texts)
