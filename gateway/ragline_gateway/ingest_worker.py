"""Background workers that drain the durable ingest queue: claim, decode, chunk, embed, store.

The queue lives in PostgreSQL behind the retriever, so any number of gateway replicas run
workers side by side: a claim leases documents with SKIP LOCKED, and a worker that dies
leaves leases that run out and are taken over. Each worker handles one claimed batch at a
time; several workers keep the embedder's micro-batches full while others decode or store.
Decoding and chunking are CPU-bound and run in threads, so the event loop keeps serving.
A worker serves no caller: each claimed document is stored for the tenant its job belongs to,
as the claim carries it, and a claim mixing tenants is handled tenant by tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from prometheus_client import Counter, Histogram

from ragline import tracing
from ragline.errors import (
    InvalidArgument,
    ServiceError,
    logged_error_id,
)
from ragline.retry import backoff_seconds
from ragline.v1 import common_pb2, ingest_queue_service_pb2, retriever_service_pb2
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.documents import DecodedDocument, decode_document
from ragline_gateway.ingest import Ingester, PreparedDocument
from ragline_gateway.timings import Timings

log = logging.getLogger(__name__)
T = TypeVar("T")

INGEST_DOCUMENTS = Counter(
    "ragline_ingest_documents_total",
    "Ingest job documents finished by this gateway's workers, by outcome (stored, skipped, retried, failed).",
    ["outcome"],
)
INGEST_CHUNKS = Counter(
    "ragline_ingest_chunks_total",
    "Chunks of job documents, by whether they were embedded or reused unchanged text already stored.",
    ["source"],
)
INGEST_FAILURES = Counter(
    "ragline_ingest_failures_total",
    "Job document failures (retried or final), by reason: unreadable, embedder, retriever, rejected or internal.",
    ["reason"],
)
INGEST_STAGE_SECONDS = Histogram(
    "ragline_ingest_stage_duration_seconds",
    "Time one worker spent on one claimed batch, by stage (claim, decode, chunk, lookup, embed, store).",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# Backoff bounds when the embedder sheds load or a dependency is down.
_BUSY_BACKOFF_SECONDS = (0.05, 2.0)
_MAX_RETRY_SECONDS = 600.0
_STOP_GRACE_SECONDS = 5.0
# Errors after which recording a document's failure is worth another try: the retriever was unreachable.
_TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


# A document refused with these would be refused again: it fails at once, without another attempt.
_REJECTED_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
)


class _Retryable(Exception):
    """A failure that another attempt may not have: a dependency down or erroring."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


class IngestWorkers:
    """`GATEWAY_INGEST_WORKERS` tasks that claim job documents and ingest them until stopped."""

    def __init__(self, config: GatewayConfig, deps: Dependencies, ingester: Ingester) -> None:
        self.config = config
        self.deps = deps
        self.ingester = ingester
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._claims_failing = False

    def start(self) -> None:
        """Starts the workers."""
        self._tasks = [
            asyncio.create_task(self._run(), name=f"ingest-worker-{i}")
            for i in range(self.config.ingest_workers)
        ]

    def wake(self) -> None:
        """Makes idle workers look for work now (a job was just recorded)."""
        self._wake.set()

    async def stop(self) -> None:
        """Lets the workers finish their batches for a few seconds, then cancels them.

        A batch cut short keeps its leases until they run out; then another worker takes it.
        """
        self._stopping.set()
        self._wake.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=_STOP_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.perf_counter()
            try:
                # Polls, mostly finding nothing, would make a trace each: the batches they find are traced.
                with tracing.untraced():
                    reply = await call(
                        "retriever",
                        self.deps.ingest_queue.ClaimIngestWork(
                            ingest_queue_service_pb2.ClaimIngestWorkRequest(
                                max_documents=self.config.ingest_claim_documents,
                                lease_seconds=self.config.ingest_lease_seconds,
                                max_attempts=self.config.ingest_max_attempts,
                            ),
                            timeout=self.config.retrieve_timeout_seconds,
                        ),
                    )
            except ServiceError as exc:
                # Once per outage, not once per worker and poll: the retriever may just be starting.
                if not self._claims_failing:
                    log.warning("cannot claim ingest work (will keep trying): %s", exc)
                self._claims_failing = True
                await self._idle(self.config.ingest_poll_seconds)
                continue
            if self._claims_failing:
                log.info("claiming ingest work again")
                self._claims_failing = False
            if not reply.documents:
                await self._idle(self.config.ingest_poll_seconds)
                continue
            INGEST_STAGE_SECONDS.labels("claim").observe(time.perf_counter() - started)
            # A trace of its own, linked to the traces of the requests that recorded the documents' jobs.
            attributes = {"ragline.ingest.documents": len(reply.documents)}
            links = tracing.links_to(d.trace_parent for d in reply.documents) if tracing.enabled() else []
            with tracing.span("gateway.ingest.batch", attributes, links=links):
                heartbeat = asyncio.create_task(self._renew([d.claim for d in reply.documents]))
                try:
                    await self._process_claimed(reply.documents)
                finally:
                    heartbeat.cancel()

    async def _renew(self, claims: Sequence[ingest_queue_service_pb2.IngestClaim]) -> None:
        """Renews the leases every third of their length while the batch is processed, so a long one is not taken over."""
        interval = self.config.ingest_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await call(
                    "retriever",
                    self.deps.ingest_queue.RenewIngestWork(
                        ingest_queue_service_pb2.RenewIngestWorkRequest(
                            claims=claims, lease_seconds=self.config.ingest_lease_seconds
                        ),
                        timeout=interval,
                    ),
                )
            except ServiceError as exc:
                log.warning("cannot renew ingest leases: %s", exc)

    async def _process_claimed(self, documents: Sequence[ingest_queue_service_pb2.ClaimedDocument]) -> None:
        # Documents of other jobs, even other tenants', may share the claim; each collection's are
        # embedded together, a collection being a tenant's.
        by_collection: dict[tuple[str, str], list[ingest_queue_service_pb2.ClaimedDocument]] = defaultdict(
            list
        )
        for claimed in documents:
            by_collection[claimed.tenant, claimed.collection].append(claimed)
        for (tenant, collection), claimed_documents in by_collection.items():
            try:
                migrating = [c for c in claimed_documents if c.HasField("migration")]
                ingesting = [c for c in claimed_documents if not c.HasField("migration")]
                if migrating:
                    await self._migrate(tenant, collection, migrating)
                if ingesting:
                    await self._process(tenant, collection, ingesting)
            except Exception as exc:
                # A bug must not kill the worker, nor hold the documents until their leases run out.
                error_id = logged_error_id(log, "ingest worker failed on a batch", exc)
                for item in claimed_documents:
                    # The job's caller reads this reason: the id, never the exception's text.
                    reason = f"internal error in the gateway (error id {error_id})"
                    await self._fail(item, reason, "internal", retry=True)

    async def _process(
        self, tenant: str, collection: str, claimed: Sequence[ingest_queue_service_pb2.ClaimedDocument]
    ) -> None:
        started = time.perf_counter()
        decoded: list[tuple[ingest_queue_service_pb2.ClaimedDocument, list[DecodedDocument]]] = []
        for item in claimed:
            try:
                documents = await asyncio.to_thread(
                    decode_document, 0, item.document, self.config.max_document_bytes
                )
            except InvalidArgument as exc:
                await self._fail(item, exc.message, "unreadable", retry=False)
                continue
            decoded.append((item, documents))
        INGEST_STAGE_SECONDS.labels("decode").observe(time.perf_counter() - started)
        if not decoded:
            return
        started = time.perf_counter()
        prepared = await asyncio.to_thread(
            self.ingester.prepare, [d for _, documents in decoded for d in documents]
        )
        INGEST_STAGE_SECONDS.labels("chunk").observe(time.perf_counter() - started)

        async def embed(timings: Timings) -> tuple[str, dict[str, list[float]]]:
            # The collection's model now: a migration may have switched it since the job was recorded.
            model = (await self.ingester.collection(tenant, collection, None)).embedding_model
            return model, await self.ingester.new_vectors(tenant, collection, model, prepared, None, timings)

        try:
            model, vectors = await self._backing_off(embed)
        except _Retryable as exc:
            for item, _ in decoded:
                await self._fail(item, str(exc), exc.kind, retry=True)
            return
        except ServiceError as exc:
            for item, _ in decoded:
                await self._fail(item, f"{exc.code.name}: {exc.message}", "rejected", retry=False)
            return
        INGEST_CHUNKS.labels("embedded").inc(len(vectors))
        INGEST_CHUNKS.labels("reused").inc(sum(len(p.chunks) for p in prepared) - len(vectors))
        started = time.perf_counter()
        position = 0
        for item, documents in decoded:
            mine = prepared[position : position + len(documents)]
            position += len(documents)
            await self._store(item, self._store_prepared(tenant, collection, item, mine, vectors, model))
        INGEST_STAGE_SECONDS.labels("store").observe(time.perf_counter() - started)

    async def _migrate(
        self, tenant: str, collection: str, claimed: Sequence[ingest_queue_service_pb2.ClaimedDocument]
    ) -> None:
        """Stores claimed documents of migration jobs again with their target model's vectors (the
        retriever puts them into each migration's target collection)."""
        for model in sorted({item.migration.target_embedding_model for item in claimed}):
            items = [item for item in claimed if item.migration.target_embedding_model == model]
            await self._migrate_to(tenant, collection, model, items)

    async def _migrate_to(
        self,
        tenant: str,
        collection: str,
        model: str,
        items: Sequence[ingest_queue_service_pb2.ClaimedDocument],
    ) -> None:
        texts = sorted({chunk.text for item in items for chunk in item.chunks})
        try:
            vectors = await self._backing_off(
                lambda timings: self.ingester.embed(texts, model, None, timings)
            )
        except _Retryable as exc:
            for item in items:
                await self._fail(item, str(exc), exc.kind, retry=True)
            return
        except ServiceError as exc:
            for item in items:
                await self._fail(item, f"{exc.code.name}: {exc.message}", "rejected", retry=False)
            return
        INGEST_CHUNKS.labels("embedded").inc(len(texts))
        for item in items:
            request = retriever_service_pb2.UpsertDocumentRequest(
                tenant=tenant,
                collection=collection,
                document_id=item.document.document_id,
                metadata=item.document.metadata,
                content_hash=item.content_hash,
                chunks=[
                    common_pb2.ChunkInput(
                        text=c.text, token_count=c.token_count, embedding=vectors[c.text], metadata=c.metadata
                    )
                    for c in item.chunks
                ],
                claim=item.claim,
                embedding_model=model,
            )
            upsert = self.deps.retriever.UpsertDocument(request, timeout=self.config.retrieve_timeout_seconds)
            await self._store(item, call("retriever", upsert))

    async def _backing_off(self, embed: Callable[[Timings], Awaitable[T]]) -> T:
        """The result of `embed` (embedding new text); waits out the embedder's RESOURCE_EXHAUSTED
        without spending an attempt."""
        delay = _BUSY_BACKOFF_SECONDS[0]
        while True:
            timings = Timings(histogram=None)
            try:
                vectors = await embed(timings)
            except ServiceError as exc:
                if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # The embedder's queue is full: it admits no more now, so wait instead of piling on.
                    await asyncio.sleep(exc.retry_after or delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, _BUSY_BACKOFF_SECONDS[1])
                    continue
                if exc.code in _REJECTED_CODES:
                    raise
                raise _Retryable(f"{exc.code.name}: {exc.message}", "embedder") from None
            for timing in timings.stages:
                INGEST_STAGE_SECONDS.labels(timing.stage).observe(timing.duration_seconds)
            return vectors

    async def _store_prepared(
        self,
        tenant: str,
        collection: str,
        item: ingest_queue_service_pb2.ClaimedDocument,
        prepared: Sequence[PreparedDocument],
        vectors: dict[str, list[float]],
        model: str,
    ) -> retriever_service_pb2.UpsertDocumentResponse:
        """Upserts the claimed document's records; the last upsert carries the claim, so finishing is atomic with storing."""
        reply = None
        for i, document in enumerate(prepared):
            last = i == len(prepared) - 1
            reply = await self.ingester.store(
                tenant, collection, document, vectors, model, None, item.claim if last else None
            )
        assert reply is not None  # a decoded document has at least one record
        return reply

    async def _store(
        self,
        item: ingest_queue_service_pb2.ClaimedDocument,
        upserts: Awaitable[retriever_service_pb2.UpsertDocumentResponse],
    ) -> None:
        """Awaits the upserts of a claimed document, and reports the document failed if they fail."""
        try:
            reply = await upserts
        except ServiceError as exc:
            # The collection moved to another model after its texts were embedded: embed them again.
            model_changed = exc.reason == "EMBEDDING_MODEL_CHANGED"
            if exc.code in _REJECTED_CODES and not model_changed:
                await self._fail(item, f"{exc.code.name}: {exc.message}", "rejected", retry=False)
            else:
                await self._fail(item, f"{exc.code.name}: {exc.message}", "retriever", retry=True)
            return
        changed = reply.inserted_chunks or reply.updated_chunks or reply.deleted_chunks
        INGEST_DOCUMENTS.labels("stored" if changed else "skipped").inc()

    async def _fail(
        self, item: ingest_queue_service_pb2.ClaimedDocument, reason: str, kind: str, retry: bool
    ) -> None:
        """Reports a failed document: queued again after a growing delay while attempts remain."""
        INGEST_FAILURES.labels(kind).inc()
        request = ingest_queue_service_pb2.FailIngestWorkRequest(claim=item.claim, reason=reason)
        if retry and item.attempt < self.config.ingest_max_attempts:
            delay = min(self.config.ingest_retry_seconds * 2 ** (item.attempt - 1), _MAX_RETRY_SECONDS)
            request.retry_after.SetInParent()  # a zero delay is still a retry
            request.retry_after.FromNanoseconds(int(delay * random.uniform(0.75, 1.25) * 1e9))
        # Until the retriever has the failure, the document stays leased and its job does not finish;
        # while it is unreachable, keep trying (no longer than a lease: the claim is stale by then).
        give_up = time.monotonic() + self.config.ingest_lease_seconds
        attempt = 0
        while True:
            try:
                reply = await call(
                    "retriever",
                    self.deps.ingest_queue.FailIngestWork(
                        request, timeout=self.config.retrieve_timeout_seconds
                    ),
                )
                break
            except ServiceError as exc:
                delay = backoff_seconds(attempt, _BUSY_BACKOFF_SECONDS[1])
                if (
                    exc.code not in _TRANSIENT_CODES
                    or self._stopping.is_set()
                    or time.monotonic() + delay > give_up
                ):
                    # The lease runs out and the document is tried again: nothing is lost.
                    log.warning("cannot record the failure of %s: %s", item.document.document_id, exc)
                    return
                attempt += 1
                await asyncio.sleep(delay)
        INGEST_DOCUMENTS.labels("retried" if reply.requeued else "failed").inc()
        log.info(
            "ingest document %s (job %s, attempt %d) %s: %s",
            item.document.document_id,
            item.claim.job_id,
            item.attempt,
            "will be retried" if reply.requeued else "failed",
            reason,
        )
