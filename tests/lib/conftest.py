"""Fixtures for the shared-library tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from toy_process import Toy


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[Toy]:
    """The toy service running as a process; killed after the test if still running."""
    toy = Toy(tmp_path)
    yield toy
    if toy.process.poll() is None:
        toy.process.kill()
        toy.process.wait()
