"""The `openai` backend: embeddings from OpenAI or any OpenAI-compatible server (vLLM, Ollama, TEI, llama.cpp).

Providers limit how many inputs one request may carry, how many tokens one input may have
and how many tokens a request may hold in total. This backend counts tokens with tiktoken
(cl100k_base, the encoding of OpenAI's embedding models), truncates inputs over the limit
(the service has already rejected them if the policy says so) and splits batches into
requests within the limits, so it never sends a request that is bound to fail.

Overload (429) and server errors (5xx, timeouts, refused connections) are retried here, not
by the SDK, with exponential backoff and jitter or the delay the provider asks for in
`Retry-After`; when the retries are spent the call fails with RESOURCE_EXHAUSTED (429) or
UNAVAILABLE and the delay, which reaches the caller as a `google.rpc.RetryInfo`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import openai
from numpy.typing import NDArray
from prometheus_client import Counter

from ragline.errors import FailedPrecondition, ResourceExhausted, ServiceError, Unavailable
from ragline.retry import backoff_seconds, retry_after_seconds
from ragline.tokens import get_encoding
from ragline_embedder.backends import Prefixes
from ragline_embedder.config import EmbedderConfig

log = logging.getLogger(__name__)

RETRIES = Counter(
    "ragline_embedder_openai_retries_total",
    "Embeddings API requests retried, by reason (rate_limited, server_error, connection).",
    ["reason"],
)

# Servers that need no key still make the SDK require one.
_PLACEHOLDER_KEY = "no-key"


class OpenAIBackend:
    """Embeddings from an OpenAI-compatible `/embeddings` endpoint, through the `openai` SDK."""

    backend = "openai"
    runtime = "remote"

    def __init__(self, client: openai.OpenAI, config: EmbedderConfig, dimension: int) -> None:
        self._client = client
        self._config = config
        self.prefixes = Prefixes.from_config(config)
        self.model_name = config.openai_model
        self.dimension = dimension
        self.max_input_tokens = config.openai_max_input_tokens

    @classmethod
    def connect(cls, config: EmbedderConfig) -> OpenAIBackend:
        """Creates the client and embeds one probe text, which checks the URL, key and model and gives the dimension."""
        client = openai.OpenAI(
            api_key=config.openai_api_key or _PLACEHOLDER_KEY,
            base_url=config.openai_base_url,
            timeout=config.openai_timeout_seconds,
            max_retries=0,
        )
        backend = cls(client, config, dimension=0)
        dimension = backend.encode(["dimension probe"]).shape[1]
        if config.openai_dimensions and dimension != config.openai_dimensions:
            raise FailedPrecondition(
                f"EMBEDDER_OPENAI_DIMENSIONS={config.openai_dimensions}, but {config.openai_model} at "
                f"{config.openai_base_url} returned {dimension}-dimensional vectors; the model may not "
                "support shortened vectors"
            )
        backend.dimension = dimension
        log.info(
            "embeddings API %s serves %s with %d dimensions",
            config.openai_base_url,
            config.openai_model,
            dimension,
        )
        return backend

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts in cl100k_base; exact for OpenAI's models, an estimate for other servers' tokenizers."""
        return [len(ids) for ids in get_encoding().encode_ordinary_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds `texts` in as many requests as the provider's limits need, truncating over-long inputs."""
        encoding = get_encoding()
        limit = self.max_input_tokens
        inputs: list[str] = []
        counts: list[int] = []
        for text, ids in zip(texts, encoding.encode_ordinary_batch(list(texts)), strict=True):
            inputs.append(text if len(ids) <= limit else encoding.decode(ids[:limit]))
            counts.append(min(len(ids), limit))
        rows = [self._request(inputs[start:end]) for start, end in self._chunks(counts)]
        vectors = np.vstack(rows)
        # Most servers return unit vectors already; some (and shortened ones from others) do not.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    # A remote API is asked the same way for queries and passages.
    encode_queries = encode

    def _chunks(self, counts: Sequence[int]) -> Iterator[tuple[int, int]]:
        """(start, end) of consecutive inputs within the per-request input and token limits."""
        start, tokens = 0, 0
        for index, count in enumerate(counts):
            full = index - start >= self._config.openai_max_inputs
            if index > start and (full or tokens + count > self._config.openai_max_request_tokens):
                yield start, index
                start, tokens = index, 0
            tokens += count
        yield start, len(counts)

    def _request(self, inputs: list[str]) -> NDArray[np.float32]:
        """One embeddings request, retried on overload and server errors."""
        config = self._config
        attempt = 0
        while True:
            try:
                reply = self._client.embeddings.create(
                    input=inputs,
                    model=config.openai_model,
                    dimensions=config.openai_dimensions or openai.omit,
                    encoding_format="float",
                )
            except openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    raise FailedPrecondition(
                        f"the embeddings API at {config.openai_base_url} refused the request "
                        f"(HTTP {exc.status_code}): {exc.message}; check EMBEDDER_OPENAI_* settings",
                        reason="EMBEDDINGS_API_REFUSED",
                    ) from exc
                requested = retry_after_seconds(exc.response.headers)
                rate_limited = exc.status_code == 429
                reason = "rate_limited" if rate_limited else "server_error"
                failure = f"HTTP {exc.status_code}"
            except openai.APIConnectionError as exc:
                requested, rate_limited, reason = None, False, "connection"
                failure = "timed out" if isinstance(exc, openai.APITimeoutError) else "connection failed"
            else:
                data = sorted(reply.data, key=lambda item: item.index)
                if len(data) != len(inputs):
                    raise Unavailable(
                        f"the embeddings API returned {len(data)} vectors for {len(inputs)} inputs",
                        reason="EMBEDDINGS_API_BAD_REPLY",
                    )
                return np.array([item.embedding for item in data], dtype=np.float32)
            cap = config.openai_max_retry_wait_seconds
            delay = requested if requested is not None else backoff_seconds(attempt, cap)
            if attempt >= config.openai_max_retries or delay > cap:
                raise _exhausted(config.openai_base_url, failure, attempt + 1, rate_limited, delay)
            RETRIES.labels(reason).inc()
            log.warning("embeddings API %s (attempt %d); retrying in %.2fs", failure, attempt + 1, delay)
            time.sleep(delay)
            attempt += 1


def _exhausted(url: str, failure: str, attempts: int, rate_limited: bool, delay: float) -> ServiceError:
    message = (
        f"the embeddings API at {url} failed ({failure}) after {attempts} attempt(s); retry in {delay:.1f}s"
    )
    if rate_limited:
        return ResourceExhausted(message, reason="EMBEDDINGS_API_RATE_LIMITED", retry_after=delay)
    return Unavailable(message, reason="EMBEDDINGS_API_UNAVAILABLE", retry_after=delay)
