"""Rerank backends: a `/rerank` HTTP server, or a sentence-transformers CrossEncoder in this process.

A cross-encoder reads the query and a passage together, so it judges relevance better than
comparing two vectors, at the price of one forward pass per passage; the gateway uses it on
the few passages retrieval found. Which backend serves `Rerank` is configuration; with none
configured the RPC answers FAILED_PRECONDITION and callers skip the stage.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from ragline.config import ConfigError
from ragline.errors import FailedPrecondition, ResourceExhausted, ServiceError, Unavailable
from ragline.retry import retry_after_seconds
from ragline_embedder.backends import prepare_offline_model_loading, threads_available
from ragline_embedder.config import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class Reranker(Protocol):
    """Scores passages by relevance to a query; blocking."""

    model_name: str
    in_process: bool
    """True when scoring uses this process's CPU, so it must share the model thread."""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, in order; higher means more relevant."""
        ...


class HttpReranker:
    """A `/rerank` endpoint: Hugging Face TEI (`texts`), or Cohere, Jina, vLLM and Infinity (`documents`)."""

    in_process = False

    def __init__(self, config: EmbedderConfig) -> None:
        self._url = config.rerank_url
        self._model = config.rerank_model
        self._field = config.rerank_format
        self._timeout = config.rerank_timeout_seconds
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if config.rerank_api_key:
            self._headers["Authorization"] = f"Bearer {config.rerank_api_key}"
        self.model_name = config.rerank_model or self._url

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Asks the server for every passage's score; the reply may list them in any order."""
        body: dict[str, Any] = {"query": query, self._field: list(passages)}
        if self._model:
            body["model"] = self._model
        request = urllib.request.Request(self._url, json.dumps(body).encode(), self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                payload = json.load(reply)
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise Unavailable(
                f"the rerank server at {self._url} did not answer: {exc}", reason="RERANK_API_UNAVAILABLE"
            ) from exc
        except json.JSONDecodeError as exc:
            raise Unavailable(
                f"the rerank server at {self._url} sent invalid JSON", reason="RERANK_API_BAD_REPLY"
            ) from exc
        return self._parse(payload, len(passages))

    def _refused(self, exc: urllib.error.HTTPError) -> ServiceError:
        detail = exc.read(500).decode(errors="replace")
        message = f"the rerank server at {self._url} answered HTTP {exc.code}: {detail}"
        delay = retry_after_seconds(exc.headers)
        if exc.code == 429:
            return ResourceExhausted(message, reason="RERANK_API_RATE_LIMITED", retry_after=delay)
        if exc.code >= 500:
            return Unavailable(message, reason="RERANK_API_UNAVAILABLE", retry_after=delay)
        return FailedPrecondition(f"{message}; check EMBEDDER_RERANK_* settings", reason="RERANK_API_REFUSED")

    def _parse(self, payload: Any, count: int) -> list[float]:
        """Scores by index from `[{index, score}]` (TEI) or `{results: [{index, relevance_score}]}` (the rest)."""
        results: Any = payload.get("results") if isinstance(payload, dict) else payload
        scores: dict[int, float] = {}
        try:
            for item in results:
                score = item["relevance_score"] if "relevance_score" in item else item["score"]
                scores[int(item["index"])] = float(score)
        except (TypeError, KeyError, ValueError) as exc:
            raise Unavailable(
                f"the rerank server at {self._url} sent a reply in an unknown shape",
                reason="RERANK_API_BAD_REPLY",
            ) from exc
        if sorted(scores) != list(range(count)):
            raise Unavailable(
                f"the rerank server at {self._url} scored {len(scores)} of {count} passages",
                reason="RERANK_API_BAD_REPLY",
            )
        return [scores[index] for index in range(count)]


class LocalReranker:
    """A sentence-transformers CrossEncoder on the CPU, loaded from a directory; never downloads."""

    in_process = True

    def __init__(self, model: CrossEncoder, model_name: str, batch_size: int) -> None:
        self._model = model
        self._batch_size = batch_size
        self.model_name = model_name

    @classmethod
    def load(cls, config: EmbedderConfig) -> LocalReranker:
        """Loads the cross-encoder from `EMBEDDER_RERANK_MODEL_DIR` (seconds)."""
        assert config.rerank_model_dir is not None, "reranker_loader checked the directory"
        prepare_offline_model_loading()
        import torch
        from sentence_transformers import CrossEncoder

        torch.set_num_threads(threads_available(config.threads))
        model = CrossEncoder(str(config.rerank_model_dir), device="cpu", local_files_only=True)
        return cls(model, config.rerank_model_dir.resolve().name, config.batch_size)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """The model's score of each (query, passage) pair."""
        scores = self._model.predict(
            [(query, passage) for passage in passages],
            batch_size=self._batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [float(score) for score in scores]


def reranker_loader(config: EmbedderConfig) -> Callable[[], Reranker] | None:
    """The function that loads the configured reranker, or None when none is configured.

    Like `backend_loader`, it checks the settings first, so that a reranker that cannot work
    stops the service at start with a ConfigError.
    """
    if config.rerank_backend == "http":
        if not config.rerank_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"EMBEDDER_RERANK_URL={config.rerank_url!r}: EMBEDDER_RERANK_BACKEND=http needs the "
                "http(s) URL of a /rerank endpoint"
            )
        return partial(HttpReranker, config)
    if config.rerank_backend == "local":
        if config.rerank_model_dir is None or not config.rerank_model_dir.is_dir():
            raise ConfigError(
                f"EMBEDDER_RERANK_MODEL_DIR={str(config.rerank_model_dir or '')!r}: "
                "EMBEDDER_RERANK_BACKEND=local needs the directory of a sentence-transformers CrossEncoder"
            )
        return partial(LocalReranker.load, config)
    return None
