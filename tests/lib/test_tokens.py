"""The offline tiktoken encodings load on first use from many threads at once (the gateway chunks in several)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

# A fresh process and cache folder: the first use installs the files, which is where threads collided.
_SCRIPT = """
import concurrent.futures
from ragline.tokens import get_encoding
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    counts = list(pool.map(lambda _: len(get_encoding().encode("one two three")), range(64)))
print(set(counts))
"""


def test_first_use_from_many_threads_loads_once(tmp_path: Path) -> None:
    env = {"RAGLINE_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{3}"
    assert sorted(p.suffix for p in (tmp_path / "tiktoken").iterdir()) == ["", ""]
