"""Per-stage timing of a request, for the response's `stage_timings` and the stage latency histogram."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Histogram

from ragline.metrics import LATENCY_BUCKETS
from ragline.v1 import common_pb2

STAGE_DURATION = Histogram(
    "ragline_gateway_stage_duration_seconds",
    "Time one pipeline stage took, by stage.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)


class Timings:
    """Collects the durations of a request's stages in the order they ran."""

    def __init__(self) -> None:
        self.stages: list[common_pb2.StageTiming] = []

    @asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        """Times the body as stage `name`, whether it succeeds or fails."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            STAGE_DURATION.labels(name).observe(elapsed)
            self.stages.append(common_pb2.StageTiming(stage=name, duration_seconds=elapsed))
