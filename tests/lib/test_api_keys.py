"""API key tokens: their form, reading them back, the stored hash, and where a client finds its key."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from ragline.api_keys import (
    ApiKeyToken,
    client_token,
    is_key_id,
    new_token,
    parse_token,
    role_name,
    role_value,
    secret_sha256,
    token_file,
    write_token_file,
)
from ragline.v1 import admin_service_pb2


def test_a_new_token_has_the_prefix_a_base32_id_and_a_256_bit_secret_and_reads_back() -> None:
    tokens = [new_token() for _ in range(50)]
    for token in tokens:
        text = str(token)
        assert text.startswith("rgl_")
        assert is_key_id(token.key_id)
        assert len(token.secret) == 43 and "=" not in token.secret
        assert parse_token(text) == token
    assert len({t.key_id for t in tokens}) == len({t.secret for t in tokens}) == 50


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Bearer rgl_x",
        "rgl_",
        "rgl_abcdefghijklmnop",
        "rgl_ABCDEFGHIJKLMNOP_" + "A" * 43,  # the id is lowercase
        "rgl_abcdefghijklmno1_" + "A" * 43,  # 1 is not base32
        "rgl_abcdefghijklmnop_" + "A" * 42,  # a byte short
        "rgl_abcdefghijklmnop_" + "A" * 42 + "B",  # not what 32 bytes encode to
        "rgl_abcdefghijklmnop_" + "A" * 43 + "\n",
        "xyz_abcdefghijklmnop_" + "A" * 43,
    ],
)
def test_anything_but_a_well_formed_token_is_refused(text: str) -> None:
    assert parse_token(text) is None


def test_the_stored_hash_is_the_sha256_of_the_secret_in_hex() -> None:
    token = new_token()
    assert secret_sha256(token.secret) == hashlib.sha256(token.secret.encode()).hexdigest()
    assert len(secret_sha256(token.secret)) == 64
    assert parse_token(str(ApiKeyToken(token.key_id, token.secret))) == token


def test_role_names_and_values_match_the_proto() -> None:
    assert [role_name(v) for v in (1, 2, 3)] == ["reader", "writer", "admin"]
    assert role_value("writer") == admin_service_pb2.ROLE_WRITER
    with pytest.raises(ValueError):
        role_value("owner")


def test_the_token_file_is_created_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api_key"
    write_token_file(path, "rgl_first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "rgl_first\n"
    with pytest.raises(FileExistsError):
        write_token_file(path, "rgl_second")
    assert path.read_text() == "rgl_first\n"


def test_a_client_sends_the_environments_key_else_the_state_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGLINE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("RAGLINE_API_KEY", raising=False)
    assert client_token() is None
    write_token_file(token_file(), "rgl_from_file")
    assert client_token() == "rgl_from_file"
    monkeypatch.setenv("RAGLINE_API_KEY", "rgl_from_env")
    assert client_token() == "rgl_from_env"
