"""Every environment variable a service reads is documented in that service's README, so the tables never drift."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ragline.config import env_name
from ragline_embedder.config import EmbedderConfig
from ragline_gateway.config import GatewayConfig
from ragline_generator.config import GeneratorConfig
from ragline_retriever.config import RetrieverConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("config", "readme"),
    [
        (GatewayConfig, "gateway/README.md"),
        (EmbedderConfig, "services/embedder/README.md"),
        (RetrieverConfig, "services/retriever/README.md"),
        (GeneratorConfig, "services/generator/README.md"),
    ],
)
def test_every_setting_is_in_the_readme(config: Any, readme: str) -> None:
    text = (ROOT / readme).read_text()
    names = [env_name(f) for f in dataclasses.fields(config) if "env" in f.metadata]
    assert names
    assert [n for n in names if f"`{n}`" not in text] == []
