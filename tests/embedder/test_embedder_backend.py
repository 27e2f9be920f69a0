"""Unit tests of the local backends, run in-process on the bundled all-MiniLM-L6-v2: onnxruntime and torch."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragline.config import load_config
from ragline_embedder import backends, onnx_backend
from ragline_embedder.backends import EmbeddingBackend, InputType, local_model, threads_available
from ragline_embedder.config import EmbedderConfig
from ragline_embedder.loader import backend_loader
from ragline_embedder.onnx_backend import OnnxBackend, export_key, exported_graph
from ragline_embedder.torch_backend import TorchBackend

TEXTS = [
    "a wing in a propeller slipstream",
    "Boundary-layer transition on a flat plate at Mach 2.5, measured with hot wires.",
    "Café naïve façade: ÅNGSTRÖM 東京 😀, tabs\tand\nnewlines",
    "drag " * 300,  # over the 256-token limit: both runtimes truncate it alike
    "x",
]


def test_the_shared_module_imports_no_backend() -> None:
    # Every backend imports backends.py; a backend imported back from it made an import cycle.
    tree = ast.parse(Path(backends.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name for name in imported if name and name.startswith("ragline_embedder")} == {
        "ragline_embedder.config"
    }


def test_describes_the_bundled_model(any_backend: EmbeddingBackend, request: pytest.FixtureRequest) -> None:
    assert (any_backend.model_name, any_backend.dimension, any_backend.max_input_tokens) == (
        "all-MiniLM-L6-v2",
        384,
        256,
    )
    assert any_backend.backend == "local"
    assert any_backend.runtime == request.node.callspec.params["any_backend"]


def test_vectors_are_unit_length_float32(any_backend: EmbeddingBackend) -> None:
    vectors = any_backend.encode(["a wing in a propeller slipstream", "boundary layer transition"])
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_query_prefix_is_put_before_queries_only(backend: EmbeddingBackend) -> None:
    text = "supersonic flow over a cone"
    assert backend.prefixes.apply(text, InputType.QUERY) == "query: " + text
    assert backend.prefixes.apply(text, InputType.PASSAGE) == text


def test_token_counts_include_special_tokens_and_overlong_texts_are_truncated(
    any_backend: EmbeddingBackend,
) -> None:
    short, long = "drag of a sphere", "drag " * 600
    assert any_backend.count_tokens([short, long]) == [6, 602]
    # The model reads only its first 256 tokens, so text past them changes nothing.
    np.testing.assert_allclose(
        any_backend.encode([long]), any_backend.encode([long + "lift " * 50]), atol=1e-5
    )


def test_queries_get_a_spinning_session_of_their_own_unless_turned_off(
    backend: EmbeddingBackend, onnx_cache: Path
) -> None:
    def entry(session: Any, key: str) -> str:
        try:
            return str(session.get_session_options().get_session_config_entry(key))
        except RuntimeError:  # the session was not given this entry
            return ""

    def spinning(session: Any) -> tuple[str, ...]:
        keys = (
            "session.intra_op.allow_spinning",
            "session.force_spinning_stop",
            "session.intra_op.spin_duration_us",
        )
        return tuple(entry(session, key) for key in keys)

    assert isinstance(backend, OnnxBackend)
    assert spinning(backend._session) == ("0", "", "")
    # Its workers spin briefly between operators only, and stop when the pass returns.
    assert spinning(backend._query_session) == ("1", "1", str(onnx_backend.SPIN_MICROSECONDS))
    environ = {"EMBEDDER_ONNX_CACHE_DIR": str(onnx_cache), "EMBEDDER_QUERY_SESSION": "false"}
    off = backend_loader(load_config(EmbedderConfig, environ=environ))()
    assert isinstance(off, OnnxBackend)
    assert off._query_session is off._session


def test_onnxruntime_vectors_match_torch(backend: EmbeddingBackend, torch_backend: TorchBackend) -> None:
    assert backend.count_tokens(TEXTS) == torch_backend.count_tokens(TEXTS)
    # Together (padded to the longest) and one by one (no padding): the same vectors either way.
    together = backend.encode(TEXTS)
    alone = np.vstack([backend.encode([text]) for text in TEXTS])
    # Queries run on their own session (EMBEDDER_QUERY_SESSION), of the same graph.
    queries = np.vstack([backend.encode_queries([text]) for text in TEXTS])
    np.testing.assert_allclose(queries, alone, atol=1e-6)
    reference = torch_backend.encode(TEXTS)
    for vectors in (together, alone, queries):
        cosines = np.sum(vectors * reference, axis=1)
        assert cosines.min() > 0.9999, cosines


def test_the_export_is_cached_and_reused(
    backend: EmbeddingBackend, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session's backend fixture exported the graph into onnx_cache; a second load must not export.
    config = load_config(EmbedderConfig, environ={"EMBEDDER_ONNX_CACHE_DIR": str(onnx_cache)})
    path, name = local_model(config)
    graph = exported_graph(path, name, onnx_cache)
    written = graph.stat().st_mtime_ns

    def no_export(model_path: Path, destination: Path) -> None:
        raise AssertionError("exported again although a graph for these files and versions is cached")

    monkeypatch.setattr(onnx_backend, "export_graph", no_export)
    again = OnnxBackend.load(config, path, name)
    assert again.encode(["cached"]).shape == (1, 384)
    assert graph.stat().st_mtime_ns == written
    assert [p.name for p in onnx_cache.iterdir()] == [graph.parent.name]  # no temporary folder left


def test_the_cache_key_follows_the_model_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"one")
    first = export_key(model)
    assert export_key(model) == first
    (model / "weights.bin").write_bytes(b"two")
    assert export_key(model) != first


def test_concurrent_exports_publish_one_whole_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas starting together: each exports privately, one rename wins, nobody sees a partial file."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    exports = []

    def slow_export(model_path: Path, destination: Path) -> None:
        exports.append(destination)
        with destination.open("wb") as graph:
            graph.write(b"half")
            time.sleep(0.2)
            graph.write(b" and the rest")

    monkeypatch.setattr(onnx_backend, "export_graph", slow_export)
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(exported_graph(model, "m", cache))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert results[0].read_bytes() == b"half and the rest"
    assert [p.name for p in cache.iterdir()] == [results[0].parent.name]
    # Later starts find it.
    exports.clear()
    assert exported_graph(model, "m", cache) == results[0]
    assert exports == []


def test_an_unwritable_cache_exports_to_a_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    monkeypatch.setattr(
        onnx_backend, "export_graph", lambda model_path, destination: destination.write_bytes(b"g")
    )
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    graph = exported_graph(model, "m", blocker / "cache")
    assert graph.read_bytes() == b"g"
    assert not graph.is_relative_to(blocker)


def test_counting_on_one_thread_while_another_encodes_is_safe(any_backend: EmbeddingBackend) -> None:
    """The service counts tokens on the event loop while the model thread encodes.

    With one tokenizer for both, torch's backend switched padding and truncation off under a
    running encode ("Unable to create tensor", INTERNAL errors under load).
    """
    texts = [f"{TEXTS[1]} {i}" * (1 + i % 4) for i in range(8)]
    expected = any_backend.count_tokens(texts)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 2.0

    def encode() -> None:
        while time.monotonic() < deadline:
            try:
                assert any_backend.encode(texts).shape == (8, 384)
            except BaseException as exc:
                errors.append(exc)
                return

    worker = threading.Thread(target=encode)
    worker.start()
    while time.monotonic() < deadline:
        assert any_backend.count_tokens(texts) == expected
    worker.join()
    assert errors == []


def test_threads_follow_affinity_and_the_cgroup_cpu_limit(tmp_path: Path) -> None:
    import os

    cpus = len(os.sched_getaffinity(0))
    assert threads_available(3, tmp_path) == 3
    assert threads_available(0, tmp_path) == cpus  # no cgroup files: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads_available(0, tmp_path) == cpus
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert threads_available(0, tmp_path) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # cgroup v1, unlimited
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads_available(0, tmp_path) == cpus
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{100000 * (cpus + 4)}\n")
    assert threads_available(0, tmp_path) == cpus  # a limit above the affinity changes nothing


def test_a_failed_export_says_how_to_run_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")

    def failing_export(model_path: Path, destination: Path) -> None:
        raise ValueError("unsupported operator")

    monkeypatch.setattr(onnx_backend, "export_graph", failing_export)
    config = load_config(EmbedderConfig, environ={"EMBEDDER_ONNX_CACHE_DIR": str(tmp_path / "cache")})
    with pytest.raises(RuntimeError, match=r"unsupported operator.*EMBEDDER_LOCAL_RUNTIME=torch"):
        OnnxBackend.load(config, model, "odd-model")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-written left


def test_abandoned_export_folders_are_cleaned_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    cache = tmp_path / "cache"
    old, recent = cache / ".export-old", cache / ".export-recent"
    for folder in (old, recent):
        folder.mkdir(parents=True)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(
        onnx_backend, "export_graph", lambda model_path, destination: destination.write_bytes(b"g")
    )
    exported_graph(model, "m", cache)
    assert not old.exists()
    assert recent.exists()  # perhaps another replica exporting right now
