"""A TLS-terminating proxy for tests: puts TLS in front of the embedded Valkey or PostgreSQL, which do not speak it.

Clients connect with `rediss://` or `sslmode=verify-full` and verify the proxy's trustme certificate,
as they would a managed Redis or PostgreSQL's; the proxy forwards the decrypted bytes to the real
server. For PostgreSQL it answers the protocol's SSLRequest with 'S' before the handshake, as the
server does; a client that skips TLS is cut off. It runs its own event loop in a thread, so that a
test may block (starting a stack) while connections go through it.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import trustme

_SSL_REQUEST = 80877103  # PostgreSQL's SSLRequest code, after the message length 8

Connect = Callable[[], Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class TlsProxy:
    """Listens on 127.0.0.1 with `certificate` and forwards each connection to what `connect` opens."""

    def __init__(self, connect: Connect, certificate: trustme.LeafCert, *, postgres: bool = False) -> None:
        self._connect = connect
        self._postgres = postgres
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self._context)
        self.handshakes = 0
        """TLS handshakes completed: connections that really went over TLS."""
        self.refused = 0
        """Connections cut off: a failed handshake (a client that does not trust the certificate) or plaintext."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> int:
        """Starts listening; returns the port."""
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def stop(self) -> None:
        """Stops listening and the loop's thread."""

        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._postgres:
                length, code = struct.unpack("!ii", await reader.readexactly(8))
                if (length, code) != (8, _SSL_REQUEST):
                    raise ConnectionError("plaintext PostgreSQL client")
                writer.write(b"S")
                await writer.drain()
            await writer.start_tls(self._context)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ConnectionError):
            self.refused += 1
            writer.close()
            return
        self.handshakes += 1
        backend_reader, backend_writer = await self._connect()
        await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()
