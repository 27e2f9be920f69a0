"""Every `python -m` entry point the Makefile, Dockerfiles and docs use actually runs its main()."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("ragline.devstack", "usage:"),
        ("ragline.cli", "usage: ragline"),
        ("ragline.healthcheck", "usage: python -m ragline.healthcheck HOST:PORT"),
    ],
)
def test_module_entry_points_run_main(module: str, expected: str) -> None:
    args = [sys.executable, "-m", module] + (["--help"] if module != "ragline.healthcheck" else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert expected in result.stdout + result.stderr
