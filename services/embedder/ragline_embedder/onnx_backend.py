"""The local model on onnxruntime: a graph exported once from the installed torch weights, cached on disk.

The first start exports the sentence-transformers model (transformer, pooling, then L2
normalisation) to ONNX with `torch.onnx.export`, into
`$RAGLINE_STATE_DIR/embedder-onnx/<model>-<key>/model.onnx`. The key hashes the model's files
and the torch and onnx versions that made the graph, so a new model or a new exporter gets a
new file and an unchanged one is reused; a later start needs neither torch nor
sentence-transformers. The export goes to a private temporary folder renamed into place, so
replicas starting together on a shared state directory never read a half-written graph.

Texts are tokenised with the model's own fast tokenizer (its `tokenizer.json`, the Rust
tokenizer transformers wraps), as sentence-transformers does: lower-cased if the model says
so, truncated to its `max_seq_length`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from ragline.config import load_config, state_dir
from ragline_embedder.backends import (
    Prefixes,
    forward_passes,
    local_model,
    prepare_offline_model_loading,
    threads_available,
)
from ragline_embedder.config import BATCH_TOKENS, EmbedderConfig

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

# Part of the cache key: bump it when the exported graph changes (wrapper, inputs, opset).
EXPORT_FORMAT = 1
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
GRAPH_FILE = "model.onnx"


def cache_root(config: EmbedderConfig) -> Path:
    """Where exported graphs are kept: `EMBEDDER_ONNX_CACHE_DIR`, else `embedder-onnx` in the state directory."""
    return config.onnx_cache_dir or state_dir() / "embedder-onnx"


def export_key(model_path: Path) -> str:
    """A hash of the model's files and of what turns them into a graph (torch, onnx, this exporter)."""
    digest = hashlib.sha256()
    for name in ("torch", "onnx"):
        digest.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
    digest.update(f"format={EXPORT_FORMAT} opset={OPSET}\n".encode())
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_path).as_posix()}\n".encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_graph(model_path: Path, destination: Path) -> None:
    """Writes the model as one ONNX graph: token ids and mask in, L2-normalised sentence embeddings out.

    Needs torch and sentence-transformers (about 1-3 s after they are imported). The graph
    takes its inputs positionally, with batch and sequence axes free.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu").eval()

    class SentenceEmbedding(torch.nn.Module):
        """Calls the whole sentence-transformers pipeline from positional tensors (the exporter wants those)."""

        def __init__(self, names: Sequence[str]) -> None:
            super().__init__()
            self.model = model
            self.names = list(names)

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features = dict(zip(self.names, inputs, strict=True))
            embeddings = self.model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(embeddings, p=2.0, dim=1)

    # Two texts of different lengths, so that the traced graph pads and masks.
    sample = model.tokenizer(
        ["a short text", "a longer sample text, so that the first one is padded"],
        padding=True,
        truncation=True,
        return_tensors="pt",
    )
    names = [name for name in INPUT_NAMES if name in sample]
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python conditions it records as constants; they hold for any shape here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SentenceEmbedding(names).eval(),
            tuple(sample[name] for name in names),
            str(destination),
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def exported_graph(model_path: Path, model_name: str, root: Path) -> Path:
    """The graph of `model_path` cached under `root`, exported first if no cached one matches its files and versions."""
    folder = root / f"{model_name}-{export_key(model_path)[:20]}"
    graph = folder / GRAPH_FILE
    if graph.is_file():
        return graph
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_exports(root)
        # A private folder renamed into place: readers see no graph or a whole one, and a replica
        # exporting at the same moment either wins the rename or finds the other's graph there.
        scratch = Path(tempfile.mkdtemp(prefix=f".export-{uuid.uuid4().hex[:8]}-", dir=root))
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="ragline-embedder-onnx-"))
        log.warning(
            "cannot write the ONNX cache %s (%s); exporting to %s for this run only: "
            "set EMBEDDER_ONNX_CACHE_DIR or RAGLINE_STATE_DIR to a writable folder to export once",
            root,
            exc,
            fallback,
        )
        return exported_graph(model_path, model_name, fallback)
    try:
        started = time.perf_counter()
        export_graph(model_path, scratch / GRAPH_FILE)
        try:
            scratch.rename(folder)
        except OSError:
            if not graph.is_file():
                raise
        else:
            log.info("exported %s to ONNX in %.1fs: %s", model_name, time.perf_counter() - started, graph)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return graph


def _remove_abandoned_exports(root: Path, older_than_seconds: float = 3600) -> None:
    """Deletes private export folders a killed process left behind (an export takes seconds, not an hour)."""
    for scratch in root.glob(".export-*"):
        with contextlib.suppress(OSError):
            if time.time() - scratch.stat().st_mtime > older_than_seconds:
                shutil.rmtree(scratch, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def load_tokenizer(model_path: Path) -> Tokenizer:
    """The model's fast tokenizer as sentence-transformers sets it up.

    Its `tokenizer.json` (else transformers' conversion of its vocabulary), lower-casing
    first when `sentence_bert_config.json` says `do_lower_case`, as sentence-transformers does.
    """
    from tokenizers import Tokenizer, normalizers

    if (model_path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    else:
        from transformers import AutoTokenizer

        tokenizer = Tokenizer.from_str(
            AutoTokenizer.from_pretrained(str(model_path)).backend_tokenizer.to_str()
        )
    if _read_json(model_path / "sentence_bert_config.json").get("do_lower_case"):
        current = tokenizer.normalizer
        # A Sequence iterates over its members at run time; its type stub does not say so.
        members = (
            list(cast(Iterable[Any], current)) if isinstance(current, normalizers.Sequence) else [current]
        )
        if not any(isinstance(member, normalizers.Lowercase) for member in members):
            parts: list[normalizers.Normalizer] = [normalizers.Lowercase()]
            parts += [member for member in members if isinstance(member, normalizers.Normalizer)]
            tokenizer.normalizer = normalizers.Sequence(parts)
    return tokenizer


def max_sequence_length(model_path: Path) -> int:
    """Tokens the model reads, as sentence-transformers decides it: `max_seq_length`, else the model's limit."""
    configured = _read_json(model_path / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(configured, int):
        return configured
    limits = [
        _read_json(model_path / "config.json").get("max_position_embeddings"),
        _read_json(model_path / "tokenizer_config.json").get("model_max_length"),
    ]
    return min(limit for limit in [*limits, 512] if isinstance(limit, int))


# How long a worker thread of the query session spins for the next operator before it sleeps. Between
# two operators of one pass it waits microseconds; a longer wait means the thread that runs the pass
# lost its core, and spinning on would only take the other one. A query's pass in process, 2 shared
# cores, four settings taking turns (load 5, then 3): 9.2 / 6.2 ms at p50 with 20 us, 10.5 / 6.2 with
# 50 us, 10.3 / 6.4 spinning unbounded (the pool's default) and 8.6 / 6.5 sleeping.
SPIN_MICROSECONDS = 20


def session_options(threads: int, *, spinning: bool = False) -> onnxruntime.SessionOptions:
    """One model thread that uses `threads` cores per operator; with `spinning`, the worker threads
    spin briefly between operators instead of sleeping, and stop when the pass returns."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning workers burn the cores the event loop (and, on a shared machine, everything else)
    # needs between passes: passages were embedded more slowly with it on a busy machine. A single
    # query is answered sooner with it, as its many small operators do not wait for threads to wake.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if spinning:
        # Spinning on after a pass returned took a core from the gateway and retriever, whose turn it
        # is then, and from this process's event loop, which sends the reply: the embedder spent 38.5 ms
        # of CPU per cold Search through the stack, 14.5 ms with these two entries.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(SPIN_MICROSECONDS))
    return options


class OnnxBackend:
    """A sentence-transformers model exported to ONNX and run by onnxruntime on the CPU."""

    backend = "local"
    runtime = "onnxruntime"

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        tokenizer: Tokenizer,
        *,
        query_session: onnxruntime.InferenceSession | None = None,
        model_name: str,
        max_tokens: int,
        prefixes: Prefixes,
        batch_size: int = 32,
        batch_tokens: int = BATCH_TOKENS["onnxruntime"],
    ) -> None:
        self._session = session
        # The same graph in a session whose threads spin (EMBEDDER_QUERY_SESSION), for queries.
        self._query_session = query_session or session
        self._inputs = [arg.name for arg in session.get_inputs()]
        unknown = set(self._inputs) - set(INPUT_NAMES)
        if unknown:
            raise ValueError(
                f"the ONNX graph of {model_name} wants inputs {sorted(unknown)} this backend cannot give"
            )
        # Two tokenizers, each configured once and never changed: the Rust tokenizer's truncation
        # and padding are shared state, and counting (on the event loop) must not race encoding
        # (in the model thread) over them.
        self._pad_id = _pad_id(tokenizer)
        self._counter = tokenizer
        self._counter.no_truncation()
        self._counter.no_padding()
        self._truncating = type(tokenizer).from_str(tokenizer.to_str())
        self._truncating.enable_truncation(max_tokens)
        self._truncating.no_padding()
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self.prefixes = prefixes
        self.model_name = model_name
        self.max_input_tokens = max_tokens
        self.dimension = int(
            self._run(self._session, [np.array([[0]]), np.array([[1]]), np.array([[0]])]).shape[1]
        )

    @classmethod
    def load(cls, config: EmbedderConfig, model_path: Path, model_name: str) -> OnnxBackend:
        """Exports the model (first start only, seconds) and opens an onnxruntime session on its graph."""
        import onnxruntime

        try:
            graph = exported_graph(model_path, model_name, cache_root(config))
        except Exception as exc:
            raise RuntimeError(
                f"exporting {model_name} to ONNX failed ({exc}); "
                "EMBEDDER_LOCAL_RUNTIME=torch runs it without the export"
            ) from exc
        threads = threads_available(config.threads)
        options = session_options(threads)
        try:
            session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        except Exception:
            # An unreadable cached graph (a disk error, a manual edit) is exported again, once.
            log.warning("the cached ONNX graph %s does not load; exporting it again", graph, exc_info=True)
            shutil.rmtree(graph.parent, ignore_errors=True)
            graph = exported_graph(model_path, model_name, cache_root(config))
            session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        query_session = None
        if config.query_session:
            query_session = onnxruntime.InferenceSession(
                str(graph), session_options(threads, spinning=True), providers=["CPUExecutionProvider"]
            )
        return cls(
            session,
            load_tokenizer(model_path),
            query_session=query_session,
            model_name=model_name,
            max_tokens=max_sequence_length(model_path),
            prefixes=Prefixes.from_config(config),
            batch_size=config.batch_size,
            batch_tokens=config.model_batch_tokens(),
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts by the model's own tokenizer, special tokens included, before truncation."""
        return [len(encoding.ids) for encoding in self._counter.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeds `texts` in forward passes grouped by length (`forward_passes`)."""
        return self._encode(self._session, texts)

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`encode` on the query session, when there is one."""
        return self._encode(self._query_session, texts)

    def _encode(self, session: onnxruntime.InferenceSession, texts: Sequence[str]) -> NDArray[np.float32]:
        encodings = self._truncating.encode_batch(list(texts))
        lengths = [len(encoding.ids) for encoding in encodings]
        vectors = np.empty((len(encodings), self.dimension), dtype=np.float32)
        for indices in forward_passes(lengths, self._batch_size, self._batch_tokens):
            vectors[indices] = self._forward(session, [encodings[index] for index in indices])
        return vectors

    def _forward(
        self, session: onnxruntime.InferenceSession, encodings: Sequence[Any]
    ) -> NDArray[np.float32]:
        width = max(len(encoding.ids) for encoding in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            ids[row, :length] = encoding.ids
            mask[row, :length] = 1
            types[row, :length] = encoding.type_ids
        return self._run(session, [ids, mask, types])

    def _run(self, session: onnxruntime.InferenceSession, arrays: list[NDArray[Any]]) -> NDArray[np.float32]:
        feeds = dict(zip(INPUT_NAMES, arrays, strict=True))
        (vectors,) = session.run([OUTPUT_NAME], {name: feeds[name].astype(np.int64) for name in self._inputs})
        return np.asarray(vectors, dtype=np.float32)


def _pad_id(tokenizer: Tokenizer) -> int:
    """The id of the padding token the tokenizer names; the mask hides it from the model anyway."""
    padding = json.loads(tokenizer.to_str()).get("padding") or {}
    for token in (padding.get("pad_token"), "[PAD]", "<pad>"):
        found = tokenizer.token_to_id(token) if isinstance(token, str) else None
        if found is not None:
            return int(found)
    return 0


def main() -> None:
    """`python -m ragline_embedder.onnx_backend`: exports the configured model now (an image build does)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    prepare_offline_model_loading()
    config = load_config(EmbedderConfig)
    path, name = local_model(config)
    print(exported_graph(path, name, cache_root(config)))


if __name__ == "__main__":
    main()
