"""Asynchronous ingest jobs through the public API: batch and streamed uploads, failures, listing, cancelling."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack
from ragline.v1 import common_pb2

COLLECTION = "jobs"

pytestmark = pytest.mark.integration


def _text(document_id: str, text: str) -> DocumentToIngest:
    return DocumentToIngest(document_id, text.encode(), "text/plain")


async def test_a_batch_job_stores_readable_documents_and_lists_the_unreadable_one(
    client: RaglineClient,
) -> None:
    records = "\n".join(
        json.dumps(r)
        for r in (
            {"id": "hull", "text": "Ships float because the hull displaces water.", "topic": "ships"},
            {"id": "sail", "text": "A sail turns wind into forward thrust.", "topic": "ships"},
        )
    )
    job = await client.create_ingest_job(
        [
            _text("lighthouse.txt", "A lighthouse guides ships with a rotating beam of light."),
            DocumentToIngest("broken.txt", b"caf\xe9 au lait", "text/plain"),
            DocumentToIngest("ships.jsonl", records.encode(), "application/jsonl"),
        ],
        collection=COLLECTION,
    )
    # The JSON Lines file became one job document per record.
    assert job.total_documents == 4
    assert job.state in (common_pb2.INGEST_JOB_STATE_PENDING, common_pb2.INGEST_JOB_STATE_RUNNING)

    job = await client.wait_for_ingest_job(job.job_id, poll_seconds=0.2, timeout=120)

    assert job.state == common_pb2.INGEST_JOB_STATE_FAILED
    assert (job.done_documents, job.failed_documents) == (3, 1)
    assert [f.document_id for f in job.failures] == ["broken.txt"]
    assert "not valid UTF-8" in job.failures[0].reason
    assert job.failures[0].attempts == 1  # unreadable content is not retried
    assert job.end_time.seconds > 0 and not job.HasField("estimated_time_left")
    stored = await client.get_document("ships.jsonl#sail", collection=COLLECTION)
    assert stored.metadata["topic"] == "ships"
    hits = await client.search("rotating beam of light", collection=COLLECTION, top_k=1)
    assert hits.hits[0].document_id == "lighthouse.txt"


async def test_a_streamed_upload_reingested_unchanged_is_skipped_whole(client: RaglineClient) -> None:
    documents = [
        _text(f"stream-{i}.txt", f"Streamed note {i} about tide pools and sea stars.") for i in range(12)
    ]

    first = await client.upload_ingest_documents(iter(documents), collection=COLLECTION)
    assert first.total_documents == 12 and not first.accepting_documents
    first = await client.wait_for_ingest_job(first.job_id, poll_seconds=0.2, timeout=120)
    assert first.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    assert (first.done_documents, first.skipped_documents, first.written_chunks) == (12, 0, 12)
    assert first.documents_per_second > 0

    again = await client.upload_ingest_documents(iter(documents), collection=COLLECTION)
    again = await client.wait_for_ingest_job(again.job_id, poll_seconds=0.2, timeout=120)
    assert again.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED
    assert (again.done_documents, again.skipped_documents, again.written_chunks) == (0, 12, 0)


async def test_jobs_are_listed_newest_first_a_page_at_a_time(client: RaglineClient) -> None:
    made = []
    for i in range(3):
        job = await client.create_ingest_job(
            [_text(f"list-{i}.txt", f"Listing note {i}.")], collection="jobs-list"
        )
        made.append(job.job_id)
    first = await client.list_ingest_jobs(collection="jobs-list", page_size=2)
    second = await client.list_ingest_jobs(
        collection="jobs-list", page_size=2, page_token=first.next_page_token
    )
    assert [j.job_id for j in first.jobs] + [j.job_id for j in second.jobs] == made[::-1]
    assert second.next_page_token == ""
    assert all(not j.failures for j in first.jobs)


async def test_cancelling_drops_the_documents_not_yet_processed(client: RaglineClient) -> None:
    documents = [
        _text(f"cancel-{i}.txt", f"Cancelled note {i} on glaciers and moraines.") for i in range(300)
    ]
    job = await client.create_ingest_job(documents, collection=COLLECTION)

    cancelled = await client.cancel_ingest_job(job.job_id)

    assert cancelled.state == common_pb2.INGEST_JOB_STATE_CANCELLED
    assert cancelled.cancelled_documents > 0
    assert cancelled.status_message == "cancelled by request"
    settled = await client.get_ingest_job(job.job_id)
    assert settled.done_documents + settled.skipped_documents + settled.cancelled_documents == 300
    # Cancelling a finished job changes nothing.
    assert (await client.cancel_ingest_job(job.job_id)).cancelled_documents == settled.cancelled_documents


@pytest.mark.parametrize(
    ("job_id", "code"),
    [
        ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", grpc.StatusCode.NOT_FOUND),
        ("nope", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_an_unknown_or_malformed_job_id_is_refused(
    client: RaglineClient, job_id: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.get_ingest_job(job_id)
    assert error.value.code() == code
    assert "job" in (error.value.details() or "")


async def test_a_bad_request_records_no_job(client: RaglineClient) -> None:
    before = await client.list_ingest_jobs(collection="jobs-bad")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.create_ingest_job(
            [_text("same.txt", "one"), _text("same.txt", "two")], collection="jobs-bad"
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "appears twice" in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.upload_ingest_documents(iter([]), collection="jobs-bad")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await client.upload_ingest_documents(
            iter([_text("ok.txt", "fine"), DocumentToIngest("x.bin", b"?", "image/png")]),
            collection="jobs-bad",
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = await client.list_ingest_jobs(collection="jobs-bad")
    # The interrupted upload's job is kept, cancelled, with the reason; no other job appeared.
    new = [j for j in after.jobs if j.job_id not in {b.job_id for b in before.jobs}]
    assert [j.state for j in new] == [common_pb2.INGEST_JOB_STATE_CANCELLED]
    assert "upload stopped before it finished" in new[0].status_message


def _embedded_chunks(stack: Stack) -> float:
    return stack["gateway"].metric("ragline_ingest_chunks_total", {"source": "embedded"})


async def _quiet_embedded_chunks(stack: Stack) -> float:
    """The counter once it has stopped moving: workers may still finish documents of earlier tests' jobs."""
    last = _embedded_chunks(stack)
    for _ in range(100):
        await asyncio.sleep(1.0)
        now = _embedded_chunks(stack)
        if now == last:
            return now
        last = now
    raise AssertionError("ingest workers never went quiet")


async def test_a_changed_document_re_embeds_only_its_changed_chunks(
    stack: Stack, client: RaglineClient
) -> None:
    paragraphs = [
        f"Paragraph {i} of the field guide describes the {bird} in detail. " * 30
        for i, bird in enumerate(("heron", "kestrel", "puffin", "wren", "osprey", "curlew"))
    ]
    before = await _quiet_embedded_chunks(stack)
    first = await client.create_ingest_job(
        [_text("guide.txt", "\n\n".join(paragraphs))], collection=COLLECTION
    )
    first = await client.wait_for_ingest_job(first.job_id, poll_seconds=0.2, timeout=120)
    chunks = first.written_chunks
    assert chunks >= 5 and _embedded_chunks(stack) - before == chunks

    paragraphs[3] = paragraphs[3].replace("wren", "nightjar")
    middle = await _quiet_embedded_chunks(stack)
    second = await client.create_ingest_job(
        [_text("guide.txt", "\n\n".join(paragraphs))], collection=COLLECTION
    )
    second = await client.wait_for_ingest_job(second.job_id, poll_seconds=0.2, timeout=120)

    assert second.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED and second.done_documents == 1
    embedded = _embedded_chunks(stack) - middle
    assert 1 <= embedded <= 2 < chunks
    assert second.written_chunks == embedded
