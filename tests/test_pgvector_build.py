"""The embedded PostgreSQL's pgvector is the portable build tools/build_pgvector.py makes.

The wheel's own library needs AVX-512 in every distance function; on a CPU without it the
first HNSW build kills the server with SIGILL. The portable build keeps AVX-512 only in the
kernels pgvector selects at run time after checking the CPU, which these tests check too.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.tool_scripts import load_tool

build_pgvector = load_tool("build_pgvector")

# pgvector's kernels chosen at run time by CPU feature checks (the names carry the feature).
_DISPATCHED = re.compile(r"(Avx512|F16c|\.fma|\.avx)")


def test_the_installed_library_is_the_portable_build() -> None:
    assert build_pgvector.MARKER.read_text().strip() == build_pgvector.SOURCE_SHA256
    assert build_pgvector.installed_version() == build_pgvector.VERSION


@pytest.mark.integration
def test_avx512_is_used_only_behind_run_time_dispatch() -> None:
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(build_pgvector.LIBRARY)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    function = ""
    unguarded = set()
    for line in listing.splitlines():
        if line.endswith(">:"):
            function = line.split("<", 1)[1].rstrip(">:")
        elif "%zmm" in line and not _DISPATCHED.search(function):
            unguarded.add(function)
    assert not unguarded, f"AVX-512 outside run-time dispatch in {sorted(unguarded)}"
