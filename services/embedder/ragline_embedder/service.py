"""The `ragline.v1.EmbedderService` servicer: validates requests and runs the model off the event loop.

The model is blocking and CPU-bound, so it runs in one worker thread of its own and the event
loop stays free to answer health checks and accept other calls meanwhile. One thread, not a
pool: concurrent forward passes would only fight over the same cores, its queue takes
batches in arrival order (a small request slips in between a large one's batches), and
torch's thread count, set when the model loads, applies to the thread that loaded it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from numpy.typing import NDArray
from prometheus_client import Counter, Histogram

from ragline.errors import InvalidArgument, Unavailable
from ragline.metrics import LATENCY_BUCKETS
from ragline.v1 import embedder_service_pb2 as pb
from ragline.v1 import embedder_service_pb2_grpc as pb_grpc
from ragline_embedder.backends import EmbeddingBackend, InputType
from ragline_embedder.config import EmbedderConfig

TEXTS = Counter("ragline_embedder_texts_total", "Texts embedded, by input type.", ["input_type"])
MODEL_SECONDS = Histogram(
    "ragline_embedder_model_seconds", "Time the model took for one batch.", buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "ragline_embedder_batch_size",
    "Texts passed to the model in one batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

_INPUT_TYPES = {
    pb.INPUT_TYPE_UNSPECIFIED: InputType.PASSAGE,
    pb.INPUT_TYPE_QUERY: InputType.QUERY,
    pb.INPUT_TYPE_PASSAGE: InputType.PASSAGE,
}


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    """Serves one embedding backend, loaded by `start()`."""

    def __init__(self, config: EmbedderConfig, load_backend: Callable[[], EmbeddingBackend]) -> None:
        self._config = config
        self._load_backend = load_backend
        self._backend: EmbeddingBackend | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-model")

    async def start(self) -> None:
        """Loads the model in the model thread, while health reports NOT_SERVING."""
        loop = asyncio.get_running_loop()
        self._backend = await loop.run_in_executor(self._model_thread, self._load_backend)

    async def check_ready(self) -> None:
        """Raises until the model is loaded."""
        self._ready_backend()

    async def stop(self) -> None:
        """Ends the model thread, once in-flight calls are done."""
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    def _ready_backend(self) -> EmbeddingBackend:
        if self._backend is None:
            raise Unavailable("the embedder is still starting (loading its model); retry shortly")
        return self._backend

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        backend = self._ready_backend()
        texts = list(request.texts)
        self._validate(texts)
        input_type = _INPUT_TYPES.get(request.input_type)
        if input_type is None:
            raise InvalidArgument(f"unknown input_type {request.input_type}", field="input_type")
        size = self._config.batch_size
        embeddings: list[pb.Embedding] = []
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            vectors = await asyncio.get_running_loop().run_in_executor(
                self._model_thread, _run_model, backend, batch, input_type
            )
            embeddings.extend(pb.Embedding(values=row) for row in vectors.tolist())
        TEXTS.labels(input_type.value).inc(len(texts))
        return pb.EmbedResponse(embeddings=embeddings, model=backend.model_name, dimension=backend.dimension)

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        backend = self._ready_backend()
        return pb.GetModelInfoResponse(
            model=backend.model_name,
            dimension=backend.dimension,
            max_input_tokens=backend.max_input_tokens,
            backend=backend.backend,
        )

    def _validate(self, texts: Sequence[str]) -> None:
        if not texts:
            raise InvalidArgument("texts is empty: send at least one text to embed", field="texts")
        limit = self._config.max_batch
        if len(texts) > limit:
            raise InvalidArgument(
                f"texts[{limit}]: too many texts ({len(texts)}); one request may carry at most {limit}, "
                "so split it into smaller requests",
                field=f"texts[{limit}]",
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(
                    f"texts[{index}] is empty or only whitespace; every text must have content",
                    field=f"texts[{index}]",
                )


def _run_model(backend: EmbeddingBackend, texts: list[str], input_type: InputType) -> NDArray[np.float32]:
    """One forward pass, timed here so that time spent queued for the model thread is not counted."""
    started = time.perf_counter()
    vectors = backend.embed(texts, input_type)
    MODEL_SECONDS.observe(time.perf_counter() - started)
    BATCH_SIZE.observe(len(texts))
    return vectors
