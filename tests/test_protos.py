"""The committed stubs in lib/ragline/v1 are exactly what the pinned grpcio-tools makes of protos/."""

from __future__ import annotations

import re
from pathlib import Path

from tool_scripts import load_tool

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    generated = load_tool("gen_protos").generate(tmp_path)
    assert generated, "no stubs were generated"
    committed_dir = ROOT / "lib" / "ragline" / "v1"
    for path in generated:
        committed = committed_dir / path.name
        assert committed.exists(), f"{path.name} is not committed; run `make protos`"
        assert committed.read_text() == path.read_text(), f"{path.name} is stale; run `make protos`"
    stale = {p.name for p in committed_dir.glob("*_pb2*.py*")} - {p.name for p in generated}
    assert not stale, f"stubs without a proto: {sorted(stale)}; delete them"


def test_protos_follow_the_style_guide() -> None:
    for proto in sorted((ROOT / "protos" / "ragline" / "v1").glob("*.proto")):
        text = proto.read_text()
        assert "package ragline.v1;" in text
        lines = text.splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            declares = re.match(r"(service|rpc|message|enum)\s+\w+|\w[\w.<>, ]*\s+\w+\s*=\s*\d+;", stripped)
            if declares and not stripped.startswith(("//", "option", "syntax", "package", "import")):
                previous = lines[number - 1].strip()
                assert previous.startswith("//"), f"{proto.name}:{number + 1}: {stripped!r} has no comment"
        for enum, first in re.findall(r"enum (\w+) \{\s*(?://[^\n]*\n\s*)*(\w+) = 0;", text):
            expected = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper() + "_UNSPECIFIED"
            assert first == expected, f"{proto.name}: enum {enum} starts with {first}, not {expected}"
        for rpc, request, response in re.findall(
            r"rpc (\w+)\((?:stream )?(\w+)\) returns \((?:stream )?(\w+)\)", text
        ):
            assert request == f"{rpc}Request", f"{proto.name}: {rpc} takes {request}"
            assert response == f"{rpc}Response", f"{proto.name}: {rpc} returns {response}"
