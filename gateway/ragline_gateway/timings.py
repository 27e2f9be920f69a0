"""Per-stage timing of a request, for the response's `stage_timings` and a stage latency histogram.

Queries record into the gateway's stage histogram as each stage ends; ingestion records its
lookup and embed stages without it and reports them where it chooses (the ingest workers' own
histogram, once a batch's vectors are in).

Some stages run concurrently (the collection lookup beside the query embedding), so durations may
overlap; stages are listed in the order they started. Work started on speculation records into
its own `Timings` and joins the request's with `merge` only if its result is used; a stage that
is cancelled is not recorded at all.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Histogram

from ragline import tracing
from ragline.metrics import LATENCY_BUCKETS
from ragline.v1 import common_pb2

STAGE_DURATION = Histogram(
    "ragline_gateway_stage_duration_seconds",
    "Time one pipeline stage took, by stage.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)


class Timings:
    """Collects the durations of a request's stages, in the order they started."""

    def __init__(self, histogram: Histogram | None = STAGE_DURATION) -> None:
        """`histogram` observes each stage, by name, as it ends; None leaves the reporting to the caller."""
        self._histogram = histogram
        self.stages: list[common_pb2.StageTiming] = []
        self._starts: list[float] = []
        self._created = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the request's timing began: the response's `duration_seconds`."""
        return time.perf_counter() - self._created

    def _add(self, started: float, timing: common_pb2.StageTiming) -> None:
        index = bisect.bisect_right(self._starts, started)
        self._starts.insert(index, started)
        self.stages.insert(index, timing)

    @asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        """Times the body as stage `name`, whether it succeeds or fails; not if it is cancelled.

        The body is the span `gateway.<name>`, and the observation's exemplar is its trace."""
        started = time.perf_counter()
        with tracing.span(f"gateway.{name}"):
            try:
                yield
            except asyncio.CancelledError:
                raise
            except BaseException:
                self._record(name, started)
                raise
            else:
                self._record(name, started)

    def _record(self, name: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        if self._histogram is not None:
            self._histogram.labels(name).observe(elapsed, tracing.exemplar())
        self._add(started, common_pb2.StageTiming(stage=name, duration_seconds=elapsed))

    def merge(self, other: Timings) -> None:
        """Adds `other`'s stages (work done for this request elsewhere), keeping the start order."""
        for started, timing in zip(other._starts, other.stages, strict=True):
            self._add(started, timing)
        other.stages, other._starts = [], []
