"""A reranker on loopback speaking the Cohere/Jina/Infinity `/rerank` protocol.

No reranker weights exist offline here, so this stands in for a TEI or Infinity server: it
scores a passage by the share of the query's words it contains, which is deterministic and
enough to prove the gateway applies a reranker's order, and degrades when it is gone.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def overlap(query: str, passage: str) -> float:
    """The share of the query's words that occur in the passage."""
    words = set(re.findall(r"\w+", query.lower()))
    return len(words & set(re.findall(r"\w+", passage.lower()))) / max(len(words), 1)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scores = [overlap(body["query"], p) for p in body["documents"]]
        results = sorted(
            ({"index": i, "relevance_score": s} for i, s in enumerate(scores)),
            key=lambda r: -r["relevance_score"],
        )
        payload = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keeps test output quiet."""


class RerankServer:
    """The server, started on a free loopback port; stop() and start() again on the same port."""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rerank"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
