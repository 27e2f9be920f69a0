"""How long to wait before asking an overloaded HTTP provider again: shared by every client of an external model API."""

from __future__ import annotations

import email.utils
import random
import time
from typing import Protocol

# First backoff; each retry doubles it, up to the configured cap.
BACKOFF_BASE_SECONDS = 0.5


class Headers(Protocol):
    """Response headers, looked up case-insensitively (httpx and urllib both do)."""

    def get(self, key: str, /) -> str | None:
        """The header's value, or None."""
        ...


def retry_after_seconds(headers: Headers) -> float | None:
    """The delay a 429 or 503 response asks for: `retry-after-ms` (OpenAI) or `Retry-After` (seconds or a date)."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def backoff_seconds(attempt: int, cap: float) -> float:
    """Exponential backoff with jitter, so that replicas that failed together do not retry together."""
    return min(cap, BACKOFF_BASE_SECONDS * 2.0**attempt) * random.uniform(0.5, 1.0)
