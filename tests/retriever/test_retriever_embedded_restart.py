"""A retriever killed with SIGKILL leaves the embedded PostgreSQL running; the next retriever adopts it and,
when it stops cleanly, stops it: no server is left orphaned."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from ragline.devstack import Stack

pytestmark = pytest.mark.integration


def _postmaster(data_dir: Path) -> int | None:
    """The pid of the running PostgreSQL server of `data_dir`, if there is one."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    return pid if _running(pid) else None


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (an exited one that nobody reaped yet does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_after_a_kill_the_next_retriever_adopts_the_server_and_stops_it(tmp_path: Path) -> None:
    stack = Stack(state=tmp_path, services=("retriever",), free_ports=True, env={"DATABASE_URL": ""})
    stack.start()
    data_dir = tmp_path / "postgres"
    server = _postmaster(data_dir)
    try:
        retriever = stack["retriever"]
        assert server is not None
        retriever.kill()
        assert _postmaster(data_dir) == server  # left running, as a crash leaves it

        retriever.start()
        retriever.wait_healthy(120)
        assert _postmaster(data_dir) == server  # adopted, not started a second time
        assert retriever.stop() == 0
        assert _postmaster(data_dir) is None, "the embedded PostgreSQL was left running"
        assert not _running(server)
    finally:
        stack.stop()
        if (pid := _postmaster(data_dir)) is not None:
            psutil.Process(pid).terminate()
