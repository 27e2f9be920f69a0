"""A real OpenAI-compatible server on loopback (llama.cpp's, serving the bundled SmolLM2) and an
HTTP relay in front of it that can refuse or drop requests, to test the openai backend's retries.

Nothing of the openai SDK is replaced: the generator talks real HTTP to the relay, which either
answers with an error status itself or relays the bytes both ways to llama.cpp's server.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ragline.embedded_redis import free_port
from ragline_generator.backends import bundled_model_path


class LlamaServer:
    """`python -m llama_cpp.server` serving the bundled SmolLM2 GGUF on a free loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self._log = log.open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(bundled_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "2",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("llama_cpp.server did not answer in time")

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


@dataclass
class Failure:
    """What the relay does to the next `count` requests instead of relaying them."""

    count: int
    status: int = 429
    """The HTTP status to answer with; 0 closes the connection without an answer."""
    headers: dict[str, str] = field(default_factory=dict)


class Relay:
    """Relays HTTP requests to `upstream_port`, one per connection, unless told to fail them."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.failure = Failure(0)
        self.requests = 0
        self.closed_by_client = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()
            return
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = await reader.readexactly(int(length.group(1)) if length else 0)
        self.requests += 1
        if self.failure.count > 0:
            self.failure.count -= 1
            if self.failure.status:
                payload = b'{"error": {"message": "injected by the test relay", "type": "test"}}'
                extra = "".join(f"{k}: {v}\r\n" for k, v in self.failure.headers.items())
                writer.write(
                    f"HTTP/1.1 {self.failure.status} Injected\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(payload)}\r\nconnection: close\r\n{extra}\r\n".encode()
                    + payload
                )
                await writer.drain()
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        # One request per connection, so that every request passes through here and is counted.
        head = re.sub(rb"(?im)^connection:[^\r\n]*\r\n", b"", head)
        upstream_writer.write(head[:-2] + b"connection: close\r\n\r\n" + body)
        self.closed_by_client.clear()
        answer = asyncio.create_task(_pipe(upstream_reader, writer))
        # The client sends nothing more; reading returns when it closes the connection.
        await reader.read()
        if not answer.done():
            self.closed_by_client.set()
            answer.cancel()
        upstream_writer.close()
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.close()
