"""End-to-end: `ragline collections list` and `show` print each collection's embedding model and counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_end_to_end import _ragline

from ragline.client import DocumentToIngest, RaglineClient
from ragline.devstack import Stack

pytestmark = pytest.mark.integration


async def test_collections_list_and_show_give_model_dimension_and_counts(
    stack: Stack, client: RaglineClient, tmp_path: Path
) -> None:
    await client.create_collection("cli-models")
    await client.create_collection("cli-models-empty")
    documents = [
        DocumentToIngest("a.txt", b"Supersonic flow over a cone at Mach two."),
        DocumentToIngest("b.txt", b"Heat transfer in a laminar boundary layer."),
    ]
    await client.ingest(documents, collection="cli-models")

    listed = await asyncio.to_thread(_ragline, stack, tmp_path, "collections", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()}
    assert lines["cli-models"][1:] == ["all-MiniLM-L6-v2", "384", "dims", "2", "documents", "2", "chunks"]
    assert lines["cli-models-empty"][4:] == ["0", "documents", "0", "chunks"]

    shown = await asyncio.to_thread(_ragline, stack, tmp_path, "collections", "show", "cli-models")
    assert shown.returncode == 0, shown.stderr
    assert "embedding model: all-MiniLM-L6-v2 (384 dimensions)" in shown.stdout
    assert "documents: 2, chunks: 2" in shown.stdout

    missing = await asyncio.to_thread(_ragline, stack, tmp_path, "collections", "show", "no-such-collection")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr and "no-such-collection" in missing.stderr
