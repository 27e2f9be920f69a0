"""A real HTTP server on loopback for the embedder tests: OpenAI's `/v1/embeddings` and the `/rerank` protocol."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ragline_embedder.backends import EmbeddingBackend


class _Handler(BaseHTTPRequestHandler):
    """Dispatches POSTs to the owning server's `answer`."""

    server: LoopbackServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers, reply = self.server.owner.answer(self.path, body)
        data = json.dumps(reply).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keeps test output quiet."""


class LoopbackServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 in a daemon thread."""

    def __init__(self, owner: HttpModelServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


@dataclass
class Failure:
    """What the server answers instead of the real reply, `times` times (-1: always)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    times: int = -1


class HttpModelServer:
    """Speaks OpenAI's `/v1/embeddings` with real MiniLM vectors and the `/rerank` protocol over loopback.

    Embeddings honour `dimensions` (truncated and renormalised, as OpenAI does) and refuse
    batches over `max_inputs` with 400, as providers do. Rerank scores are the share of query
    words found in the passage, deterministic and easy to predict in tests. `fail` makes the
    next calls answer an error status (429 with Retry-After, 503...) instead.
    """

    def __init__(self, model: EmbeddingBackend, max_inputs: int = 8) -> None:
        self.model = model
        self.max_inputs = max_inputs
        self.embedding_requests: list[list[str]] = []
        self.rerank_requests: list[dict[str, Any]] = []
        self.failure: Failure | None = None
        self._lock = threading.Lock()
        self._http = LoopbackServer(self)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def close(self) -> None:
        """Stops serving and frees the port."""
        self._http.shutdown()
        self._http.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            failure = self.failure
            if failure is not None and failure.times != 0:
                failure.times -= 1
                return (
                    failure.status,
                    failure.headers,
                    {"error": {"message": "injected failure", "code": None}},
                )
            if path == "/v1/embeddings":
                return self._embeddings(body)
            if path == "/rerank":
                return self._rerank(body)
            return 404, {}, {"error": {"message": f"no route {path}"}}

    def _embeddings(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        inputs = body["input"]
        if len(inputs) > self.max_inputs:
            message = f"too many inputs: {len(inputs)} > {self.max_inputs}"
            return 400, {}, {"error": {"message": message, "type": "invalid_request_error"}}
        self.embedding_requests.append(inputs)
        vectors = self.model.encode(inputs)
        if body.get("dimensions"):
            vectors = vectors[:, : body["dimensions"]]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        data = [
            {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors.tolist())
        ]
        data.reverse()  # Clients must order by index, not by position.
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return 200, {}, {"object": "list", "data": data, "model": body["model"], "usage": usage}

    def _rerank(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        self.rerank_requests.append(body)
        passages = body.get("documents") or body["texts"]
        scores = [overlap_score(body["query"], passage) for passage in passages]
        ranked = sorted(range(len(passages)), key=lambda i: -scores[i])
        if "texts" in body:
            return 200, {}, [{"index": i, "score": scores[i]} for i in ranked]
        return 200, {}, {"results": [{"index": i, "relevance_score": scores[i]} for i in ranked]}


def overlap_score(query: str, passage: str) -> float:
    """The share of the query's words that occur in the passage."""
    words = set(query.lower().split())
    return len(words & set(passage.lower().split())) / len(words)
