"""The openai backend: chat completions from any OpenAI-compatible API through the `openai` SDK.

OpenAI, vLLM, Ollama and llama.cpp's server all speak the same streaming chat completions
protocol, so one client serves them all. What the SDK does not do for us is tie a request to
the caller's gRPC deadline, so retries are ours: a 429, a 5xx or an unreachable server is
retried with exponential backoff and full jitter (or after the server's Retry-After) only
before the first token (after it, the caller has part of an answer and a retry would repeat
it) and only while the deadline leaves room; once spent, the caller gets RESOURCE_EXHAUSTED
or UNAVAILABLE with a RetryInfo delay. Prompt tokens are counted with tiktoken, since the
remote model's own tokenizer is not at hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import Literal, cast

import httpx2
import openai
import tiktoken
import tiktoken.model
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from ragline.config import ConfigError
from ragline.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from ragline.retry import backoff_seconds, retry_after_seconds
from ragline.tokens import ENCODINGS, get_encoding
from ragline_generator.backends import Finish, Generation, deadline_exceeded
from ragline_generator.config import GeneratorConfig
from ragline_generator.metrics import UPSTREAM_RETRIES

log = logging.getLogger(__name__)

# Backoff before retry n (0-based) is uniform in [0, min(MAX, BASE * 2**n)] ("full jitter"), so
# many generators refused at once do not come back at once.
BACKOFF_MAX_SECONDS = 8.0
# A server's Retry-After is honoured up to this; a longer one is passed on to the caller instead.
MAX_RETRY_AFTER_SECONDS = 30.0
# Servers on a custom base URL (vLLM, Ollama, llama.cpp) usually need no key, but the SDK requires one.
PLACEHOLDER_API_KEY = "unused"

Retryable = openai.RateLimitError | openai.InternalServerError | openai.APIConnectionError


def encoding_for(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding of `model`: o200k_base for the gpt-4o and o-series families,
    cl100k_base for other and unknown models (the closest available offline)."""
    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        name = "cl100k_base"
    return get_encoding(name if name in ENCODINGS else "cl100k_base")


class OpenAIBackend:
    """Chat completions streamed from an OpenAI-compatible API."""

    def __init__(self, config: GeneratorConfig) -> None:
        api_key = config.openai_api_key or os.environ.get("OPENAI_API_KEY", "")
        if not api_key:
            if not config.openai_base_url:
                raise ConfigError(
                    "GENERATOR_BACKEND=openai needs GENERATOR_OPENAI_API_KEY (or OPENAI_API_KEY) for OpenAI, "
                    "or GENERATOR_OPENAI_BASE_URL for a server that needs no key"
                )
            api_key = PLACEHOLDER_API_KEY
        self.model_name = config.openai_model
        self.context_window = config.context_window
        self._max_retries = config.openai_max_retries
        self._encoding = encoding_for(config.openai_model)
        # Retries are done here, within the caller's deadline, so the SDK's own are off.
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=config.openai_base_url or None, max_retries=0
        )

    async def start(self) -> None:
        log.info("using model %s at %s", self.model_name, self._client.base_url)

    async def close(self) -> None:
        await self._client.close()

    def count_tokens(self, text: str) -> int:
        # Passages may contain text that looks like a special token; it is counted as plain text.
        return len(self._encoding.encode(text, disallowed_special=()))

    async def stream(self, generation: Generation, *, timeout: float) -> AsyncGenerator[str | Finish, None]:
        deadline = time.monotonic() + timeout
        chunks = await self._open(generation, deadline)
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        pieces = 0
        reason: Literal["stop", "length"] = "stop"
        try:
            async for chunk in chunks:
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.delta.content:
                        pieces += 1
                        yield choice.delta.content
                    if choice.finish_reason == "length":
                        reason = "length"
                if time.monotonic() > deadline:
                    raise deadline_exceeded()
        except openai.APITimeoutError:
            raise deadline_exceeded() from None
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise Unavailable(
                f"the model API's answer broke off after {pieces} pieces: {exc}", reason="UPSTREAM_BROKEN"
            ) from exc
        finally:
            # Closing the response tells the server to stop generating (a cancelled call lands here too).
            await chunks.close()
        # Servers that ignore stream_options.include_usage (llama.cpp's) send no usage: each streamed
        # piece is then one token, as OpenAI, vLLM and llama.cpp stream them.
        yield Finish(prompt_tokens, pieces if completion_tokens is None else completion_tokens, reason)

    async def _open(self, generation: Generation, deadline: float) -> openai.AsyncStream[ChatCompletionChunk]:
        """Starts the streamed completion, retrying 429, 5xx and connection failures within `deadline`."""
        payload = [
            cast("ChatCompletionMessageParam", {"role": m.role, "content": m.content})
            for m in generation.messages
        ]
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise deadline_exceeded()
            try:
                return await self._client.chat.completions.create(
                    model=self.model_name,
                    messages=payload,
                    max_tokens=generation.max_tokens,
                    temperature=generation.temperature,
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=remaining,
                )
            except openai.APITimeoutError:
                raise deadline_exceeded() from None
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                status = str(exc.status_code) if isinstance(exc, openai.APIStatusError) else "connect"
                delay = _retry_delay(exc, attempt)
                if attempt >= self._max_retries or delay >= deadline - time.monotonic():
                    raise _spent(exc, attempt, delay) from exc
                UPSTREAM_RETRIES.labels(status).inc()
                log.warning("model API answered %s; retry %d in %.2f s", status, attempt + 1, delay)
                await asyncio.sleep(delay)
                attempt += 1
            except openai.APIStatusError as exc:
                raise _refused(exc) from exc


def _retry_delay(exc: Retryable, attempt: int) -> float:
    """The server's Retry-After (up to MAX_RETRY_AFTER_SECONDS) if it sent one, else jittered backoff."""
    if isinstance(exc, openai.APIStatusError):
        after = retry_after_seconds(exc.response.headers)
        if after is not None:
            return min(after, MAX_RETRY_AFTER_SECONDS)
    return backoff_seconds(attempt, BACKOFF_MAX_SECONDS)


def _spent(exc: Retryable, attempt: int, delay: float) -> ServiceError:
    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
    if isinstance(exc, openai.RateLimitError):
        return ResourceExhausted(
            f"the model API is rate limiting (429) after {tries}; retry later",
            reason="UPSTREAM_RATE_LIMITED",
            retry_after=delay,
        )
    if isinstance(exc, openai.APIStatusError):
        detail = f"answered {exc.status_code}"
    else:
        detail = f"could not be reached ({exc})"
    return Unavailable(
        f"the model API {detail} after {tries}; retry later", reason="UPSTREAM_UNAVAILABLE", retry_after=delay
    )


def _refused(exc: openai.APIStatusError) -> ServiceError:
    """The error for a request the API refused for a reason retrying will not change."""
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return InvalidArgument(f"the model API refused the request: {exc.message}", reason="UPSTREAM_REFUSED")
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError):
        return FailedPrecondition(
            f"the model API answered {exc.status_code}: {exc.message}; check GENERATOR_OPENAI_API_KEY and "
            "GENERATOR_OPENAI_MODEL",
            reason="UPSTREAM_CONFIGURATION",
        )
    return Unavailable(f"the model API answered {exc.status_code}: {exc.message}", reason="UPSTREAM_ERROR")
