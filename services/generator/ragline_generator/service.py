"""The GeneratorService servicer: validates a request, builds the prompt, runs the model, cites.

RewriteQuestion asks the same model for a conversation's follow-up as a standalone question
(`rewrite.py`), and falls back to the deterministic rewrite when the model's is unusable or the
model cannot answer in time.

Both RPCs share one pipeline that yields text deltas and then the complete response; the
unary RPC keeps only the last, the streaming one forwards everything. Closing the pipeline
early (a cancelled call, an expired deadline) closes the backend's stream, which stops the
model between tokens and frees it for the next request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import cast

import grpc
from opentelemetry.trace import SpanKind

from ragline import tracing
from ragline.channels import downstream_timeout
from ragline.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from ragline.v1 import common_pb2, conversation_pb2, generator_service_pb2, generator_service_pb2_grpc
from ragline_generator.backends import ChatBackend, Finish, Generation
from ragline_generator.citations import CitationRepairer, citations, cited_numbers
from ragline_generator.config import GeneratorConfig
from ragline_generator.metrics import (
    CITATIONS_REPAIRED,
    ERRORS,
    FINISHED,
    INVALID_CITATIONS,
    REQUEST_DURATION,
    TIME_TO_FIRST_TOKEN,
    TOKEN_INTERVAL,
    TOKENS,
)
from ragline_generator.prompt import (
    MESSAGE_OVERHEAD_TOKENS,
    PassageOrder,
    PriorTurn,
    PromptTemplate,
    build_prompt,
)
from ragline_generator.rewrite import (
    REWRITE_MAX_TOKENS,
    Exchange,
    clean,
    fallback,
    needs_context,
    rewrite_messages,
    unusable,
)

log = logging.getLogger(__name__)

_FINISH_REASONS = {"stop": common_pb2.FINISH_REASON_STOP, "length": common_pb2.FINISH_REASON_LENGTH}
MAX_TEMPERATURE = 2.0
# Most earlier turns a request may carry; the prompt keeps only the latest that fit anyway.
MAX_HISTORY_TURNS = 100

Request = generator_service_pb2.GenerateRequest | generator_service_pb2.GenerateStreamRequest


class GeneratorServicer(generator_service_pb2_grpc.GeneratorServiceServicer):
    """Answers questions from passages with the configured backend."""

    def __init__(self, config: GeneratorConfig, backend: ChatBackend, template: PromptTemplate) -> None:
        self._config = config
        self._backend = backend
        self._template = template
        self._order = cast("PassageOrder", config.passage_order)
        self._started = False

    async def start(self) -> None:
        """Loads the model; until then every RPC answers UNAVAILABLE."""
        await self._backend.start()
        self._started = True

    async def check_ready(self) -> None:
        """Raises while the model is not loaded."""
        if not self._started:
            raise Unavailable("the generator is still starting")

    async def stop(self) -> None:
        """Frees the model."""
        await self._backend.close()

    async def Generate(
        self, request: generator_service_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> generator_service_pb2.GenerateResponse:
        with _counting_errors():
            async with contextlib.aclosing(self._answer(request, context)) as events:
                async for event in events:
                    if isinstance(event, generator_service_pb2.GenerateResponse):
                        return event
        raise AssertionError("the answer pipeline ended without a response")

    async def GenerateStream(
        self, request: generator_service_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[generator_service_pb2.GenerateStreamResponse]:
        with _counting_errors():
            async with contextlib.aclosing(self._answer(request, context)) as events:
                async for event in events:
                    if isinstance(event, str):
                        yield generator_service_pb2.GenerateStreamResponse(delta=event)
                    else:
                        yield generator_service_pb2.GenerateStreamResponse(final=event)

    async def _answer(
        self, request: Request, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[str | generator_service_pb2.GenerateResponse, None]:
        """Yields the answer's text deltas, then the complete GenerateResponse."""
        received = time.perf_counter()
        timeout = downstream_timeout(context, self._config.request_timeout_seconds)
        if not self._started:
            raise Unavailable("the generator is still starting; retry shortly", retry_after=1.0)
        question = request.question.strip()
        if not question:
            raise InvalidArgument("question must not be empty", field="question")
        max_tokens = self._max_tokens(request.options.max_tokens)
        temperature = request.options.temperature
        if not 0 <= temperature <= MAX_TEMPERATURE or math.isnan(temperature):
            raise InvalidArgument(
                f"options.temperature must be from 0 to {MAX_TEMPERATURE:g}, got {temperature:g}",
                field="options.temperature",
            )
        for index, passage in enumerate(request.passages):
            if not passage.text.strip():
                raise InvalidArgument(
                    f"passages[{index}].text must not be empty", field=f"passages[{index}].text"
                )

        model = self._backend.model_name
        prompt = build_prompt(
            question,
            [p.text for p in request.passages],
            template=self._template,
            order=self._order,
            count_tokens=self._backend.count_tokens,
            context_window=self._backend.context_window,
            max_tokens=max_tokens,
            dont_know=self._config.dont_know,
            history=[PriorTurn(turn.question, turn.answer) for turn in _history(request.history)],
        )
        if prompt.passages_used == 0:
            # Without context the model could only guess, so the configured answer is given unasked.
            FINISHED.labels("no_context").inc()
            yield generator_service_pb2.GenerateResponse(
                text=self._config.dont_know,
                usage=common_pb2.TokenUsage(),
                finish_reason=common_pb2.FINISH_REASON_NO_CONTEXT,
                model=model,
            )
            return

        parts: list[str] = []
        listed = [request.passages[i] for i in prompt.sources]
        repairer = CitationRepairer([p.text for p in listed], enabled=self._config.citation_repair)
        first_token = 0.0
        finish: Finish | None = None
        generation = Generation(
            prompt.messages, max_tokens=max_tokens, temperature=temperature, passages=prompt.passages_used
        )
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self._config.backend,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": max_tokens,
            "gen_ai.request.temperature": temperature,
        }
        with tracing.span(f"chat {model}", attributes, kind=SpanKind.CLIENT) as llm:
            tracing.set_text(llm, "ragline.question", question)
            stream = self._backend.stream(generation, timeout=timeout)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, Finish):
                        finish = event
                        continue
                    if not parts:
                        first_token = time.perf_counter()
                        TIME_TO_FIRST_TOKEN.labels(model).observe(first_token - received)
                    parts.append(event)
                    if released := repairer.feed(event):
                        yield released
            if finish is not None and llm.is_recording():
                llm.set_attribute(
                    "gen_ai.usage.input_tokens",
                    prompt.tokens if finish.prompt_tokens is None else finish.prompt_tokens,
                )
                llm.set_attribute("gen_ai.usage.output_tokens", finish.completion_tokens)
                llm.set_attribute("gen_ai.response.finish_reasons", [finish.reason])
        if rest := repairer.flush():
            yield rest
        if finish is None:
            raise AssertionError("the backend's stream ended without a finish")

        done = time.perf_counter()
        REQUEST_DURATION.labels(model).observe(done - received)
        if finish.completion_tokens > 1 and done > first_token > 0:
            TOKEN_INTERVAL.labels(model).observe((done - first_token) / (finish.completion_tokens - 1))
        prompt_tokens = prompt.tokens if finish.prompt_tokens is None else finish.prompt_tokens
        text = repairer.text
        CITATIONS_REPAIRED.inc(repairer.repaired)
        numbers, invalid = cited_numbers(text, prompt.passages_used)
        INVALID_CITATIONS.inc(invalid)
        TOKENS.labels(model, "prompt").inc(prompt_tokens)
        TOKENS.labels(model, "completion").inc(finish.completion_tokens)
        FINISHED.labels(finish.reason).inc()
        yield generator_service_pb2.GenerateResponse(
            text=text,
            # Numbers follow the prompt's listing order; sources maps them back to the given passages.
            citations=citations(numbers, listed),
            usage=common_pb2.TokenUsage(
                prompt_tokens=prompt_tokens, completion_tokens=finish.completion_tokens
            ),
            finish_reason=_FINISH_REASONS[finish.reason],
            model=model,
            passages_used=prompt.passages_used,
            sentences=repairer.sentences,
        )

    async def RewriteQuestion(
        self, request: generator_service_pb2.RewriteQuestionRequest, context: grpc.aio.ServicerContext
    ) -> generator_service_pb2.RewriteQuestionResponse:
        with _counting_errors():
            question = request.question.strip()
            if not question:
                raise InvalidArgument("question must not be empty", field="question")
            history = [
                Exchange(turn.question, turn.standalone_question, turn.answer)
                for turn in _history(request.history)
            ]
            if not history or not needs_context(question):
                return generator_service_pb2.RewriteQuestionResponse(
                    standalone_question=question, method=conversation_pb2.REWRITE_METHOD_NONE
                )
            if not self._started:
                raise Unavailable("the generator is still starting; retry shortly", retry_after=1.0)
            model = self._backend.model_name
            reply = await self._ask_for_rewrite(question, history, context)
            rewrite = clean(reply)
            reason = unusable(rewrite, question, history) if reply else "the model could not answer in time"
            if not reason:
                return generator_service_pb2.RewriteQuestionResponse(
                    standalone_question=rewrite, method=conversation_pb2.REWRITE_METHOD_MODEL, model=model
                )
            log.info("model rewrite %r of %r unusable (%s): falling back", rewrite, question, reason)
            return generator_service_pb2.RewriteQuestionResponse(
                standalone_question=fallback(question, history),
                method=conversation_pb2.REWRITE_METHOD_FALLBACK,
                model=model,
            )

    async def _ask_for_rewrite(
        self, question: str, history: list[Exchange], context: grpc.aio.ServicerContext
    ) -> str:
        """The model's reply to the rewrite prompt; "" when the prompt does not fit or the model is busy or slow."""
        messages = rewrite_messages(question, history, self._backend.count_tokens)
        size = sum(self._backend.count_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        if size + REWRITE_MAX_TOKENS > self._backend.context_window:
            return ""
        generation = Generation(messages, max_tokens=REWRITE_MAX_TOKENS, temperature=0.0, passages=0)
        timeout = downstream_timeout(context, self._config.rewrite_timeout_seconds)
        parts: list[str] = []
        try:
            async with contextlib.aclosing(self._backend.stream(generation, timeout=timeout)) as events:
                async for event in events:
                    if isinstance(event, str):
                        parts.append(event)
        except (ResourceExhausted, DeadlineExceeded) as exc:
            log.info("no model rewrite of %r: %s", question, exc.message)
            return ""
        return "".join(parts)

    def _max_tokens(self, requested: int) -> int:
        if requested == 0:
            return self._config.default_max_tokens
        limit = self._config.max_tokens_limit
        if not 1 <= requested <= limit:
            raise InvalidArgument(
                f"options.max_tokens must be from 1 to {limit} (GENERATOR_MAX_TOKENS_LIMIT), or 0 for the "
                f"default {self._config.default_max_tokens}; got {requested}",
                field="options.max_tokens",
            )
        return requested


def _history(turns: Sequence[conversation_pb2.Turn]) -> Sequence[conversation_pb2.Turn]:
    """A request's earlier turns; INVALID_ARGUMENT when there are too many or one has no question."""
    if len(turns) > MAX_HISTORY_TURNS:
        raise InvalidArgument(
            f"history holds {len(turns)} turns; send at most the last {MAX_HISTORY_TURNS}", field="history"
        )
    for index, turn in enumerate(turns):
        if not turn.question.strip():
            raise InvalidArgument(
                f"history[{index}].question must not be empty", field=f"history[{index}].question"
            )
    return turns


@contextlib.contextmanager
def _counting_errors() -> Iterator[None]:
    """Counts a failed request in ragline_generator_errors_total by the status it fails with."""
    try:
        yield
    except ServiceError as exc:
        ERRORS.labels(exc.code.name).inc()
        raise
    except Exception:
        ERRORS.labels(grpc.StatusCode.INTERNAL.name).inc()
        raise
