"""Deciding which of a document's chunks an upsert keeps, rewrites, adds and deletes.

Re-ingesting a document usually changes few of its chunks, so an upsert compares the new
chunks with the stored ones position by position and touches only what differs: unchanged
rows keep their ids and index entries, and the collection's generation (which caches key on)
moves only when something really changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray


def text_hash(text: str) -> str:
    """The SHA-256 hex digest of a chunk's text, stored as its `content_hash`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredChunk:
    """What the comparison needs of a chunk already in the database."""

    ordinal: int
    content_hash: str
    token_count: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class NewChunk:
    """A validated chunk of an upsert request."""

    ordinal: int
    text: str
    content_hash: str
    token_count: int
    metadata: dict[str, Any]
    # None when the caller left it out to reuse a stored chunk's embedding of the same text.
    embedding: NDArray[np.float32] | None

    def same_as(self, stored: StoredChunk) -> bool:
        """Whether storing this chunk would change nothing (same text, token count and metadata)."""
        return (
            self.content_hash == stored.content_hash
            and self.token_count == stored.token_count
            and self.metadata == stored.metadata
        )


@dataclass
class ChunkPlan:
    """The writes an upsert makes: ordinals from `delete_from` on are deleted."""

    unchanged: int = 0
    insert: list[NewChunk] = field(default_factory=list)
    update: list[NewChunk] = field(default_factory=list)
    delete_from: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        """Whether any chunk is written or deleted."""
        return bool(self.insert or self.update or self.deleted)


def plan_chunks(stored: list[StoredChunk], new: list[NewChunk]) -> ChunkPlan:
    """Compares a document's stored chunks with its new ones by ordinal."""
    by_ordinal = {chunk.ordinal: chunk for chunk in stored}
    plan = ChunkPlan(delete_from=len(new))
    for chunk in new:
        old = by_ordinal.get(chunk.ordinal)
        if old is None:
            plan.insert.append(chunk)
        elif chunk.same_as(old):
            plan.unchanged += 1
        else:
            plan.update.append(chunk)
    plan.deleted = sum(1 for chunk in stored if chunk.ordinal >= len(new))
    return plan
