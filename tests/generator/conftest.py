"""Fixtures that start the real generator process (SmolLM2 on llama.cpp) for integration tests, and
llama.cpp's OpenAI-compatible server behind a relay for the openai backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from generator_helpers import OPENAI_MODEL
from generator_loopback import Failure, LlamaServer, Relay

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


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server serving the bundled SmolLM2 on loopback."""
    server = LlamaServer(tmp_path_factory.mktemp("llama-server") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def relay(llama_server: LlamaServer) -> AsyncIterator[Relay]:
    """An HTTP relay to the llama.cpp server that tests can make refuse or drop requests."""
    relay = Relay(llama_server.port)
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
def healthy_relay(relay: Relay) -> Relay:
    """The relay, relaying every request."""
    relay.failure = Failure(0)
    relay.requests = 0
    return relay


@pytest.fixture(scope="module")
def openai_generator(relay: Relay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A generator with the openai backend, calling llama.cpp's server through the relay."""
    stack = _start(
        tmp_path_factory.mktemp("openai-generator"),
        {
            "GENERATOR_BACKEND": "openai",
            "GENERATOR_OPENAI_BASE_URL": f"http://127.0.0.1:{relay.port}/v1",
            "GENERATOR_OPENAI_MODEL": OPENAI_MODEL,
            "GENERATOR_OPENAI_MAX_RETRIES": "2",
        },
    )
    try:
        yield stack["generator"]
    finally:
        stack.stop()
