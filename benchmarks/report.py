"""Prints a benchmark's results as a table and saves them as JSON, the same way for every benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench-results"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, interpolated; q=50 is the median."""
    if len(values) == 1 or q <= 0:
        return min(values)
    if q >= 100:
        return max(values)
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def write_report(
    name: str, rows: Sequence[Mapping[str, Any]], notes: Mapping[str, Any] | None = None
) -> Path:
    """Prints `rows` as a table under the heading `name` and writes them to bench-results/<name>.json."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[_format(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n## {name}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for key, value in (notes or {}).items():
        print(f"{key}: {_format(value)}")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "rows": list(rows),
        "notes": dict(notes or {}),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"(saved to {path.relative_to(RESULTS_DIR.parent)})")
    return path


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
