"""Every setting is described once, by its field's docstring, and listed in its service's README table.

A field's docstring is the one description in code; the README's configuration table says
the same for operators. These tests keep the two from drifting: every field has a docstring,
every environment variable a service reads has a row in its README's table, and the row's
default is the one the service really uses (its own ports for the server settings).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from ragline.config import ServerConfig, env_name, load_config
from ragline.tls import ClientTlsConfig, ServerTlsConfig
from ragline_embedder import config as embedder_config
from ragline_gateway import config as gateway_config
from ragline_generator import config as generator_config
from ragline_retriever import config as retriever_config

ROOT = Path(__file__).resolve().parents[2]
SERVICES = [
    (gateway_config.GatewayConfig, "gateway/README.md"),
    (embedder_config.EmbedderConfig, "services/embedder/README.md"),
    (retriever_config.RetrieverConfig, "services/retriever/README.md"),
    (generator_config.GeneratorConfig, "services/generator/README.md"),
]
# A service's server settings are ServerConfig under its prefix, with its own default ports.
SERVER_SETTINGS = [
    ("GATEWAY", gateway_config, "gateway/README.md"),
    ("EMBEDDER", embedder_config, "services/embedder/README.md"),
    ("RETRIEVER", retriever_config, "services/retriever/README.md"),
    ("GENERATOR", generator_config, "services/generator/README.md"),
]
# A configuration table row: | `VARIABLE` | default | meaning |
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]+) \| ([^|]*\S[^|]*) \|$", re.MULTILINE)


@pytest.mark.parametrize(("config", "readme"), SERVICES)
def test_every_setting_is_in_the_readme(config: Any, readme: str) -> None:
    text = (ROOT / readme).read_text()
    names = [env_name(f) for f in dataclasses.fields(config) if "env" in f.metadata]
    assert names
    assert [n for n in names if f"`{n}`" not in text] == []


def readme_defaults(readme: str) -> dict[str, str]:
    """The default column of the README's configuration table, by variable."""
    return {name: default.strip() for name, default, _ in ROW.findall((ROOT / readme).read_text())}


def says(cell: str | None, default: Any) -> bool:
    """Whether a README's default cell says `default`: in backticks (numbers in any equal form), or no value as unset or empty."""
    if default is None or default == "":
        return cell in ({"unset"} if default is None else {"unset", "empty"})
    if cell is None or not (cell.startswith("`") and cell.endswith("`")):
        return False
    written = cell.strip("`")
    if isinstance(default, bool):
        return written == str(default).lower()
    if isinstance(default, int | float):
        return re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", written) is not None and float(written) == default
    return written == str(default)


def undocumented_fields(cls: type[Any]) -> list[str]:
    """The fields of `cls` with no docstring right below them."""
    body = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(body, ast.ClassDef)
    missing = []
    for statement, following in zip(body.body, [*body.body[1:], None], strict=True):
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        value = following.value if isinstance(following, ast.Expr) else None
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value.strip()):
            missing.append(statement.target.id)
    return missing


@pytest.mark.parametrize(
    "cls", [ServerConfig, ServerTlsConfig, ClientTlsConfig] + [config for config, _ in SERVICES]
)
def test_every_setting_has_a_docstring(cls: type[Any]) -> None:
    assert undocumented_fields(cls) == []


@pytest.mark.parametrize(("config", "readme"), SERVICES)
def test_the_readme_tables_give_each_setting_its_default(config: Any, readme: str) -> None:
    table = readme_defaults(readme)
    wrong = {
        env_name(field): (table.get(env_name(field)), field.default)
        for field in dataclasses.fields(config)
        if not says(table.get(env_name(field)), field.default)
    }
    assert wrong == {}, "README row's default, and the real one"


@pytest.mark.parametrize(("prefix", "module", "readme"), SERVER_SETTINGS)
def test_the_readme_tables_give_the_server_settings_the_service_defaults(
    prefix: str, module: Any, readme: str
) -> None:
    table = readme_defaults(readme)
    defaults = {"port": module.DEFAULT_PORT, "metrics_port": module.DEFAULT_METRICS_PORT}
    server = load_config(ServerConfig, prefix=prefix, defaults=defaults, environ={})
    wrong = {
        env_name(field, prefix): (table.get(env_name(field, prefix)), getattr(server, field.name))
        for field in dataclasses.fields(ServerConfig)
        if not says(table.get(env_name(field, prefix)), getattr(server, field.name))
    }
    assert wrong == {}, "README row's default, and the real one"


@pytest.mark.parametrize(("prefix", "module", "readme"), SERVER_SETTINGS)
def test_the_readme_tables_give_the_tls_settings(prefix: str, module: Any, readme: str) -> None:
    table = readme_defaults(readme)
    names = [env_name(field, prefix) for field in dataclasses.fields(ServerTlsConfig)]
    assert {name: table.get(name) for name in names} == dict.fromkeys(names, "unset")


def test_the_gateway_readme_gives_the_client_tls_settings() -> None:
    table = readme_defaults("gateway/README.md")
    names = [env_name(field) for field in dataclasses.fields(ClientTlsConfig)]
    assert {name: table.get(name) for name in names} == dict.fromkeys(names, "unset")
