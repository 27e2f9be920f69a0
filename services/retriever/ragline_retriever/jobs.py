"""Ingest jobs in PostgreSQL: recording uploaded documents, leasing them to workers, counting outcomes.

Workers (in the gateway) keep no state of their own: a document is `queued` until a worker
leases it (`running`, with a claim token and a lease that runs out), and it leaves `running`
only in the transaction that stores it (`UpsertDocument` with the claim) or reports it failed.
A worker killed mid-document leaves a lease that runs out, and the next claim hands the
document to another worker; the upsert is idempotent, so a document is stored exactly once.
Each job row carries its counters, updated in the same transactions, so reading a job never
scans its documents. Every transaction locks job documents before their job row, so none
can deadlock another. A job belongs to a tenant: every statement that finds a job by its id
names the tenant too, so another tenant's job is NOT_FOUND like one that does not exist; only
the workers' calls (claim, renew, fail) serve every tenant, through claim tokens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from google.protobuf import duration_pb2

from ragline import tracing
from ragline.errors import FailedPrecondition, InvalidArgument, NotFound
from ragline.v1 import common_pb2
from ragline.v1 import ingest_queue_service_pb2 as pb
from ragline.validation import MAX_ID_CHARS, check_document_id, check_text, metadata_dict, parse_uuid
from ragline_retriever.database import PooledConnection
from ragline_retriever.messages import migration_pb

MAX_CLAIM = 1000
MAX_LEASE_SECONDS = 3600.0
MAX_FAILURES_SHOWN = 100

_JOB_COLUMNS = (
    "id, collection, accepting_documents, total_documents, done_documents, skipped_documents,"
    " failed_documents, cancelled_documents, written_chunks, cancelled, status_message,"
    " created_at, started_at, finished_at, migration_source_model, migration_target_model,"
    " migration_target_dimension, clock_timestamp() AS now"
)
# A job is finished once it accepts no more documents and each of them reached an end state; a
# migration job only by its switch (`collection_migrations`), as a catch-up round may add documents.
_SETTLE_SQL = """
    UPDATE ingest_jobs SET finished_at = clock_timestamp()
    WHERE id = ANY($1::uuid[]) AND finished_at IS NULL AND NOT accepting_documents
      AND migration_target_model IS NULL
      AND done_documents + skipped_documents + failed_documents + cancelled_documents = total_documents
"""
_CLAIM_SQL = """
    WITH queued AS (
        SELECT job_id, ordinal, available_at AS since FROM ingest_job_documents
        WHERE state = 'queued' AND available_at <= clock_timestamp()
        ORDER BY available_at LIMIT $1 FOR UPDATE SKIP LOCKED
    ), expired AS (
        SELECT job_id, ordinal, lease_expires_at AS since FROM ingest_job_documents
        WHERE state = 'running' AND lease_expires_at < clock_timestamp()
        ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT job_id, ordinal FROM (SELECT * FROM queued UNION ALL SELECT * FROM expired) AS due
        ORDER BY since LIMIT $1
    )
    UPDATE ingest_job_documents AS d
    SET state = 'running', attempts = d.attempts + 1, claim_token = gen_random_uuid(),
        lease_expires_at = clock_timestamp() + make_interval(secs => $2)
    FROM picked JOIN ingest_jobs AS j ON j.id = picked.job_id
    WHERE d.job_id = picked.job_id AND d.ordinal = picked.ordinal
    RETURNING d.job_id, d.ordinal, d.document_id, d.media_type, d.metadata, d.content, d.attempts,
              d.claim_token, j.collection, j.tenant, j.trace_parent, j.migration_source_model,
              j.migration_target_model, j.migration_target_dimension
"""
# A document whose worker vanished `max_attempts` times is likely what kills workers: stop handing it out.
_ABANDON_SQL = """
    UPDATE ingest_job_documents
    SET state = 'failed', content = NULL, claim_token = NULL, lease_expires_at = NULL,
        last_error = 'its worker stopped before finishing it ' || attempts || ' times'
                     || CASE WHEN last_error = '' THEN '' ELSE ' (earlier error: ' || last_error || ')' END
    WHERE (job_id, ordinal) IN (
        SELECT job_id, ordinal FROM ingest_job_documents
        WHERE state = 'running' AND lease_expires_at < clock_timestamp() AND attempts >= $1
        FOR UPDATE SKIP LOCKED)
    RETURNING job_id
"""


def job_pb(row: asyncpg.Record, failures: Sequence[asyncpg.Record] = ()) -> common_pb2.IngestJob:
    """The job row as the API's IngestJob, with its state, rate and estimated time left derived."""
    finished = (
        row["done_documents"]
        + row["skipped_documents"]
        + row["failed_documents"]
        + row["cancelled_documents"]
    )
    if row["cancelled"]:
        state = common_pb2.INGEST_JOB_STATE_CANCELLED
    elif row["finished_at"] is not None:
        failed = row["failed_documents"] > 0
        state = common_pb2.INGEST_JOB_STATE_FAILED if failed else common_pb2.INGEST_JOB_STATE_SUCCEEDED
    elif row["started_at"] is not None:
        state = common_pb2.INGEST_JOB_STATE_RUNNING
    else:
        state = common_pb2.INGEST_JOB_STATE_PENDING
    job = common_pb2.IngestJob(
        job_id=str(row["id"]),
        collection=row["collection"],
        state=state,
        accepting_documents=row["accepting_documents"],
        total_documents=row["total_documents"],
        done_documents=row["done_documents"],
        skipped_documents=row["skipped_documents"],
        failed_documents=row["failed_documents"],
        cancelled_documents=row["cancelled_documents"],
        written_chunks=row["written_chunks"],
        status_message=row["status_message"],
        migration=migration_pb(row),
        failures=[
            common_pb2.IngestFailure(
                document_id=f["document_id"], reason=f["last_error"], attempts=f["attempts"]
            )
            for f in failures
        ],
    )
    job.create_time.FromDatetime(row["created_at"])
    if row["started_at"] is not None:
        job.start_time.FromDatetime(row["started_at"])
        elapsed = ((row["finished_at"] or row["now"]) - row["started_at"]).total_seconds()
        if elapsed > 0:
            job.documents_per_second = finished / elapsed
    if row["finished_at"] is not None:
        job.end_time.FromDatetime(row["finished_at"])
    elif job.documents_per_second > 0 and not row["accepting_documents"]:
        left = (row["total_documents"] - finished) / job.documents_per_second
        job.estimated_time_left.CopyFrom(duration_pb2.Duration(seconds=int(left), nanos=int(left % 1 * 1e9)))
    return job


def _document_records(
    job_id: uuid.UUID, first_ordinal: int, documents: Sequence[common_pb2.DocumentContent]
) -> list[tuple[object, ...]]:
    records: list[tuple[object, ...]] = []
    for i, document in enumerate(documents):
        field = f"documents[{i}]"
        records.append(
            (
                job_id,
                first_ordinal + i,
                check_document_id(document.document_id, f"{field}.document_id"),
                check_text(document.media_type, f"{field}.media_type", MAX_ID_CHARS),
                metadata_dict(document.metadata, f"{field}.metadata"),
                document.content,
            )
        )
    return records


async def _add_documents(
    conn: PooledConnection,
    job_id: uuid.UUID,
    first_ordinal: int,
    documents: Sequence[common_pb2.DocumentContent],
) -> None:
    if not documents:
        return
    await conn.copy_records_to_table(
        "ingest_job_documents",
        columns=("job_id", "ordinal", "document_id", "media_type", "metadata", "content"),
        records=_document_records(job_id, first_ordinal, documents),
    )
    await conn.execute(
        "UPDATE ingest_jobs SET total_documents = total_documents + $2 WHERE id = $1", job_id, len(documents)
    )


def _job_not_found(job_id: uuid.UUID, field: str = "job_id") -> NotFound:
    # The same words whether the job is missing or another tenant's: existence must not leak.
    return NotFound(f"ingest job {job_id} does not exist", field=field)


async def _job_row(
    conn: PooledConnection, tenant: str, job_id: uuid.UUID, lock: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE id = $1 AND tenant = $2{' FOR UPDATE' if lock else ''}",
        job_id,
        tenant,
    )
    if row is None:
        raise _job_not_found(job_id)
    return row


async def create_job(
    conn: PooledConnection,
    tenant: str,
    collection: str,
    documents: Sequence[common_pb2.DocumentContent],
    accepting: bool,
) -> common_pb2.IngestJob:
    """Records `tenant`'s job and its first documents in one transaction, with the current trace's
    traceparent, so that the workers' spans link to the request that recorded it."""
    if not documents and not accepting:
        raise InvalidArgument("a job needs at least one document", field="documents")
    async with conn.transaction():
        job_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO ingest_jobs (tenant, collection, accepting_documents, trace_parent)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            tenant,
            collection,
            accepting,
            tracing.traceparent(),
        )
        await _add_documents(conn, job_id, 0, documents)
        return job_pb(await _job_row(conn, tenant, job_id))


async def append_documents(
    conn: PooledConnection,
    tenant: str,
    job_id: uuid.UUID,
    documents: Sequence[common_pb2.DocumentContent],
    last: bool,
) -> common_pb2.IngestJob:
    """Adds documents to `tenant`'s job if it still accepts them; `last` closes it to more."""
    async with conn.transaction():
        row = await _job_row(conn, tenant, job_id, lock=True)
        if not row["accepting_documents"]:
            raise FailedPrecondition(
                f"ingest job {job_id} no longer accepts documents"
                + (" (it was cancelled)" if row["cancelled"] else "")
                + "; start a new job",
                field="job_id",
            )
        await _add_documents(conn, job_id, row["total_documents"], documents)
        if last:
            await conn.execute("UPDATE ingest_jobs SET accepting_documents = false WHERE id = $1", job_id)
            await conn.execute(_SETTLE_SQL, [job_id])
        return job_pb(await _job_row(conn, tenant, job_id))


async def get_job(conn: PooledConnection, tenant: str, job_id: uuid.UUID) -> common_pb2.IngestJob:
    """`tenant`'s job with its first failures."""
    row = await _job_row(conn, tenant, job_id)
    failures = await conn.fetch(
        "SELECT document_id, last_error, attempts FROM ingest_job_documents"
        " WHERE job_id = $1 AND state = 'failed' ORDER BY ordinal LIMIT $2",
        job_id,
        MAX_FAILURES_SHOWN,
    )
    return job_pb(row, failures)


async def list_jobs(
    conn: PooledConnection,
    tenant: str,
    collection: str,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` of `tenant`'s job rows (of `collection`, if not empty), newest first, after the
    key `after` of the previous page."""
    conditions: list[str] = ["tenant = $1"]
    args: list[object] = [tenant]
    if collection:
        args.append(collection)
        conditions.append(f"collection = ${len(args)}")
    if after is not None:
        args.extend(after)
        conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit)
    return await conn.fetch(
        f"SELECT {_JOB_COLUMNS} FROM ingest_jobs WHERE {' AND '.join(conditions)}"
        f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )


async def cancel_job(
    conn: PooledConnection, tenant: str, job_id: uuid.UUID, reason: str
) -> common_pb2.IngestJob:
    """Drops the unfinished documents of `tenant`'s job; a finished job is returned unchanged."""
    async with conn.transaction():
        # Documents before the job row, the order claims and upserts lock them in, so they cannot deadlock.
        row = await _job_row(conn, tenant, job_id)
        if row["finished_at"] is None:
            # Running documents are dropped too: their workers' upserts then no longer count for the job.
            dropped = await conn.fetchval(
                "WITH dropped AS ("
                " UPDATE ingest_job_documents SET state = 'cancelled', content = NULL, claim_token = NULL,"
                " lease_expires_at = NULL WHERE job_id = $1 AND state IN ('queued', 'running') RETURNING 1)"
                " SELECT count(*) FROM dropped",
                job_id,
            )
            await conn.execute(
                "UPDATE ingest_jobs SET cancelled = true, accepting_documents = false,"
                " cancelled_documents = cancelled_documents + $2, status_message = $3,"
                " finished_at = clock_timestamp() WHERE id = $1 AND finished_at IS NULL",
                job_id,
                dropped,
                reason or "cancelled by request",
            )
        return await get_job(conn, tenant, job_id)


def _check_lease(lease_seconds: float) -> None:
    if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(
            f"lease_seconds must be above 0 and at most {MAX_LEASE_SECONDS:g}", field="lease_seconds"
        )


async def claim_documents(
    conn: PooledConnection, max_documents: int, lease_seconds: float, max_attempts: int
) -> list[pb.ClaimedDocument]:
    """Leases up to `max_documents` due documents to the caller, oldest first."""
    if not 1 <= max_documents <= MAX_CLAIM:
        raise InvalidArgument(f"max_documents must be from 1 to {MAX_CLAIM}", field="max_documents")
    _check_lease(lease_seconds)
    if max_attempts < 1:
        raise InvalidArgument("max_attempts must be at least 1", field="max_attempts")
    async with conn.transaction():
        abandoned = [row["job_id"] for row in await conn.fetch(_ABANDON_SQL, max_attempts)]
        for job_id in sorted(set(abandoned)):
            await conn.execute(
                "UPDATE ingest_jobs SET failed_documents = failed_documents + $2 WHERE id = $1",
                job_id,
                abandoned.count(job_id),
            )
        rows = await conn.fetch(_CLAIM_SQL, max_documents, lease_seconds)
        started = sorted({row["job_id"] for row in rows})
        if started:
            # In id order, so two claims that start the same jobs cannot deadlock.
            await conn.execute(
                "UPDATE ingest_jobs SET started_at = clock_timestamp() WHERE id IN ("
                " SELECT id FROM ingest_jobs WHERE id = ANY($1::uuid[]) AND started_at IS NULL"
                " ORDER BY id FOR UPDATE)",
                started,
            )
        if abandoned:
            await conn.execute(_SETTLE_SQL, sorted(set(abandoned)))
    claimed = []
    for row in sorted(rows, key=lambda r: (r["job_id"], r["ordinal"])):
        document = common_pb2.DocumentContent(
            document_id=row["document_id"], content=row["content"] or b"", media_type=row["media_type"]
        )
        document.metadata.update(row["metadata"])
        claimed.append(
            pb.ClaimedDocument(
                claim=pb.IngestClaim(
                    job_id=str(row["job_id"]), ordinal=row["ordinal"], claim_token=str(row["claim_token"])
                ),
                collection=row["collection"],
                document=document,
                attempt=row["attempts"],
                tenant=row["tenant"],
                trace_parent=row["trace_parent"],
                migration=migration_pb(row),
            )
        )
    return claimed


def _claim_key(claim: pb.IngestClaim) -> tuple[uuid.UUID, int, uuid.UUID]:
    return (
        parse_uuid(claim.job_id, "claim.job_id"),
        claim.ordinal,
        parse_uuid(claim.claim_token, "claim.claim_token"),
    )


def validate_claim(claim: pb.IngestClaim) -> None:
    """INVALID_ARGUMENT unless the claim's ids are UUIDs; checked before any write."""
    _claim_key(claim)


async def check_claim_target(
    conn: PooledConnection, claim: pb.IngestClaim, tenant: str, collection: str
) -> bool:
    """Whether the claim's job is a migration (`collection_migrations`, which stores into a hidden
    target). NOT_FOUND unless the claim's job is `tenant`'s, INVALID_ARGUMENT unless it stores into
    `collection`: a claimed document goes where its job says, never to another tenant's data."""
    job_id = _claim_key(claim)[0]
    row = await conn.fetchrow(
        "SELECT collection, migration_target_model IS NOT NULL AS migrating FROM ingest_jobs"
        " WHERE id = $1 AND tenant = $2",
        job_id,
        tenant,
    )
    if row is None:
        raise _job_not_found(job_id, "claim.job_id")
    if row["collection"] != collection:
        raise InvalidArgument(
            f"the claimed document belongs in collection {row['collection']!r}, its job's, not {collection!r}; "
            "upsert it into the collection ClaimIngestWork named",
            field="collection",
        )
    migrating: bool = row["migrating"]
    return migrating


async def complete_document(
    conn: PooledConnection, claim: pb.IngestClaim, skipped: bool, written_chunks: int
) -> None:
    """Marks the claimed document done (or skipped) inside the caller's transaction.

    If the lease was taken over (the worker was presumed dead), nothing is counted here:
    the document's new holder stores it again, which changes nothing, and counts it then.
    """
    job_id, ordinal, token = _claim_key(claim)
    updated = await conn.fetchval(
        "UPDATE ingest_job_documents SET state = $4, content = NULL, claim_token = NULL,"
        " lease_expires_at = NULL, last_error = ''"
        " WHERE job_id = $1 AND ordinal = $2 AND claim_token = $3 AND state = 'running' RETURNING job_id",
        job_id,
        ordinal,
        token,
        "skipped" if skipped else "done",
    )
    if updated is None:
        return
    await conn.execute(
        "UPDATE ingest_jobs SET done_documents = done_documents + $2, skipped_documents = skipped_documents + $3,"
        " written_chunks = written_chunks + $4 WHERE id = $1",
        job_id,
        0 if skipped else 1,
        1 if skipped else 0,
        written_chunks,
    )
    await conn.execute(_SETTLE_SQL, [job_id])


async def fail_document(
    conn: PooledConnection, claim: pb.IngestClaim, reason: str, retry_after: float | None
) -> bool:
    """Queues the claimed document again after `retry_after` seconds, or marks it failed; True if queued."""
    job_id, ordinal, token = _claim_key(claim)
    if not reason.strip():
        raise InvalidArgument("reason is empty; say why the document failed", field="reason")
    async with conn.transaction():
        if retry_after is not None:
            requeued = await conn.fetchval(
                "UPDATE ingest_job_documents SET state = 'queued', claim_token = NULL, lease_expires_at = NULL,"
                " available_at = clock_timestamp() + make_interval(secs => $4), last_error = $5"
                " WHERE job_id = $1 AND ordinal = $2 AND claim_token = $3 AND state = 'running' RETURNING true",
                job_id,
                ordinal,
                token,
                retry_after,
                reason,
            )
            return bool(requeued)
        failed = await conn.fetchval(
            "UPDATE ingest_job_documents SET state = 'failed', content = NULL, claim_token = NULL,"
            " lease_expires_at = NULL, last_error = $4"
            " WHERE job_id = $1 AND ordinal = $2 AND claim_token = $3 AND state = 'running' RETURNING job_id",
            job_id,
            ordinal,
            token,
            reason,
        )
        if failed is not None:
            await conn.execute(
                "UPDATE ingest_jobs SET failed_documents = failed_documents + 1 WHERE id = $1", job_id
            )
            await conn.execute(_SETTLE_SQL, [job_id])
        return False


async def renew_leases(
    conn: PooledConnection, claims: Sequence[pb.IngestClaim], lease_seconds: float
) -> list[pb.IngestClaim]:
    """Extends the leases of `claims` that are still current; returns those."""
    _check_lease(lease_seconds)
    keys = [_claim_key(c) for c in claims]
    rows = await conn.fetch(
        "UPDATE ingest_job_documents AS d SET lease_expires_at = clock_timestamp() + make_interval(secs => $4)"
        " FROM unnest($1::uuid[], $2::bigint[], $3::uuid[]) AS c(job_id, ordinal, claim_token)"
        " WHERE d.job_id = c.job_id AND d.ordinal = c.ordinal AND d.claim_token = c.claim_token"
        " AND d.state = 'running' RETURNING d.job_id, d.ordinal",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        lease_seconds,
    )
    held = {(row["job_id"], row["ordinal"]) for row in rows}
    return [c for c, k in zip(claims, keys, strict=True) if (k[0], k[1]) in held]


async def queue_stats(conn: PooledConnection) -> tuple[int, int, float]:
    """Documents queued, documents running, and the age in seconds of the oldest due queued document."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'queued') AS queued,"
        " count(*) FILTER (WHERE state = 'running') AS running,"
        " coalesce(extract(epoch FROM clock_timestamp() - min(available_at) FILTER (WHERE state = 'queued')), 0)"
        " AS oldest FROM ingest_job_documents WHERE state IN ('queued', 'running')"
    )
    assert row is not None  # an aggregate always returns one row
    return row["queued"], row["running"], max(0.0, float(row["oldest"]))
