"""Starts the whole stack once for the end-to-end tests: four service processes, embedded PostgreSQL and Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from rerank_server import RerankServer

from ragline.client import RaglineClient
from ragline.devstack import Stack


@pytest.fixture(scope="session")
def reranker() -> Iterator[RerankServer]:
    server = RerankServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, reranker: RerankServer) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("ragline-state")
    env = {
        # Empty REDIS_URL and DATABASE_URL select the embedded servers, whatever the machine's environment says.
        "REDIS_URL": "",
        "DATABASE_URL": "",
        "LOG_LEVEL": "INFO",
        "EMBEDDER_RERANK_BACKEND": "http",
        "EMBEDDER_RERANK_URL": reranker.url,
        "EMBEDDER_RERANK_MODEL": "word-overlap",
        "EMBEDDER_RERANK_TIMEOUT_SECONDS": "2",
        # Short leases, so the crash test sees a killed worker's documents taken over within seconds.
        "GATEWAY_INGEST_LEASE_SECONDS": "8",
        "GATEWAY_INGEST_RETRY_SECONDS": "0.2",
        "GATEWAY_INGEST_POLL_SECONDS": "0.2",
        # The tests of the generation path ask with the default mode; test_answers.py names each mode.
        "GATEWAY_ANSWER_MODE": "generative",
    }
    stack = Stack(state=state, free_ports=True, env=env)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
async def client(stack: Stack) -> AsyncIterator[RaglineClient]:
    async with RaglineClient(stack["gateway"].address, timeout=120, api_key=stack.api_key) as client:
        yield client


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three text files on unrelated topics, and a Markdown file in a subfolder."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "eiffel.txt").write_text(
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
        "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
        "for the 1889 World's Fair. The tower is 330 metres tall."
    )
    (folder / "bananas.txt").write_text(
        "Bananas are elongated, edible fruits produced by several kinds of large herbaceous flowering plants. "
        "Ripe bananas are usually yellow, and they are rich in potassium."
    )
    (folder / "notes").mkdir()
    (folder / "notes" / "water.md").write_text(
        "# Water\n\nAt sea level, pure water boils at 100 degrees Celsius and freezes at 0 degrees Celsius.\n"
    )
    return folder
