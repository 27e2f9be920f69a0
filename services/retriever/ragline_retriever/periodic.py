"""Background work the retriever repeats every few seconds (BM25 folds, collection migrations).

Each runs in every replica; the database lets one replica do a piece of work at a time (row
locks), so the others find nothing and return. A step that fails is logged and tried again at the
next tick: background work must outlive a database outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ragline_retriever.database import describe_error

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` every `interval_seconds` from `start()` until `stop()`."""

    def __init__(self, name: str, interval_seconds: float, step: Callable[[], Awaitable[object]]) -> None:
        self._name = name
        self._interval = interval_seconds
        self._step = step
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts running in the background."""
        self._task = asyncio.create_task(self._forever(), name=self._name)

    async def stop(self) -> None:
        """Stops; a step in progress is cancelled (its transaction rolls back, to be done again)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._step()
            except Exception as exc:
                log.warning(
                    "%s failed (tried again in %g s): %s", self._name, self._interval, describe_error(exc)
                )
