"""Generates the Python stubs and .pyi type stubs of protos/ into lib/ragline/v1 (`make protos`).

The test suite calls `generate()` into a temporary folder and compares, so committed stubs
can never drift from the protos. grpcio-tools is pinned, which makes the output reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT = ROOT / "lib"


def generate(output: Path = OUTPUT) -> list[Path]:
    """Writes the stubs for every .proto under protos/ into `output`; returns the files written."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={output}",
        f"--pyi_out={output}",
        f"--grpc_python_out={output}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its messages above")
    return sorted((output / "ragline" / "v1").glob("*_pb2*.py*"))


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT))
    sys.exit(0)
