"""The openai backend's choices that need no server: tokenizer, Retry-After parsing, API key rules."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai
import pytest

from ragline.config import ConfigError, load_config
from ragline.retry import retry_after_seconds
from ragline_generator.config import GeneratorConfig
from ragline_generator.openai_backend import (
    MAX_RETRY_AFTER_SECONDS,
    OpenAIBackend,
    _retry_delay,
    encoding_for,
)


def test_gpt_4o_models_count_with_o200k_and_others_with_cl100k() -> None:
    assert encoding_for("gpt-4o-mini").name == "o200k_base"
    assert encoding_for("gpt-4").name == "cl100k_base"
    assert encoding_for("smollm2-135m-instruct").name == "cl100k_base"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3600"}, 3600.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_are_read_in_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(httpx2.Headers(headers)) == seconds


def test_a_long_retry_after_is_capped() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(429, headers={"retry-after": "3600"}, request=request)
    error = openai.RateLimitError("slow down", response=response, body=None)
    assert _retry_delay(error, 0) == MAX_RETRY_AFTER_SECONDS


def test_a_retry_after_date_is_the_time_until_then() -> None:
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    seconds = retry_after_seconds(httpx2.Headers({"retry-after": date}))
    assert seconds is not None and 8 <= seconds <= 10


def test_openai_itself_needs_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="GENERATOR_OPENAI_API_KEY"):
        OpenAIBackend(load_config(GeneratorConfig, environ={"GENERATOR_BACKEND": "openai"}))
    # A server on a base URL (vLLM, Ollama, llama.cpp) usually needs none.
    backend = OpenAIBackend(
        load_config(
            GeneratorConfig,
            environ={"GENERATOR_BACKEND": "openai", "GENERATOR_OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
        )
    )
    assert backend.model_name == "gpt-4o-mini" and backend.count_tokens("Hello, world") == 3
