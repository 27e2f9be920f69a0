"""Fixtures that start the real generator process (SmolLM2 on llama.cpp) for integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ragline.devstack import ServiceProcess, Stack


def _start(state: Path, env: dict[str, str]) -> Stack:
    stack = Stack(state=state, services=("generator",), free_ports=True, env=env)
    stack.start(timeout=120)
    return stack


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A generator with default settings, shared by a test module."""
    stack = _start(tmp_path_factory.mktemp("generator"), {})
    try:
        yield stack["generator"]
    finally:
        stack.stop()


@pytest.fixture
def start_generator(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """Starts a generator of the test's own with extra environment settings; returns its address."""
    stacks: list[Stack] = []

    def start(env: dict[str, str]) -> str:
        stacks.append(_start(tmp_path, env))
        return stacks[-1]["generator"].address

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop()
