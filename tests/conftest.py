"""Fixtures and plugins shared by every test folder."""

from __future__ import annotations

import shutil

import pytest

# process_guard fails a test that starts processes without the integration marker; pytester runs its own test.
pytest_plugins = ("process_guard", "pytester")


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of Prometheus's promtool (Debian's prometheus package; .ci/run installs it)."""
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's prometheus package (.ci/run does)"
    return path
