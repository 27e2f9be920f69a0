"""The API's messages built from database rows: collections, documents, search hits and migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf import struct_pb2, timestamp_pb2

from ragline.v1 import common_pb2
from ragline_retriever.search import Hit


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def collection_pb(row: asyncpg.Record) -> common_pb2.Collection:
    """A row of `collection_store`'s collection queries as the API's Collection."""
    return common_pb2.Collection(
        name=row["name"],
        embedding_model=row["embedding_model"],
        dimension=row["dimension"],
        distance=common_pb2.DISTANCE_METRIC_COSINE,
        generation=row["generation"],
        document_count=row["document_count"],
        chunk_count=row["chunk_count"],
        create_time=_timestamp(row["created_at"]),
        # Only the counted listings read it (`collection_store`).
        migration_job_id=str(row.get("migration_job_id") or ""),
    )


def migration_pb(row: asyncpg.Record) -> common_pb2.CollectionMigration | None:
    """What an `ingest_jobs` row's migration does (`collection_migrations`); None for a job of uploaded documents."""
    if row["migration_target_model"] is None:
        return None
    return common_pb2.CollectionMigration(
        source_embedding_model=row["migration_source_model"],
        target_embedding_model=row["migration_target_model"],
        target_dimension=row["migration_target_dimension"],
    )


def document_pb(collection: str, row: asyncpg.Record) -> common_pb2.Document:
    """A `documents` row of the collection named `collection` as the API's Document."""
    return common_pb2.Document(
        collection=collection,
        document_id=row["document_id"],
        metadata=_struct(row["metadata"]),
        content_hash=row["content_hash"],
        chunk_count=row["chunk_count"],
        create_time=_timestamp(row["created_at"]),
        update_time=_timestamp(row["updated_at"]),
    )


def hit_pb(hit: Hit) -> common_pb2.SearchHit:
    """A search hit as the API's SearchHit."""
    return common_pb2.SearchHit(
        chunk_id=str(hit.chunk_id),
        document_id=hit.document_id,
        ordinal=hit.ordinal,
        text=hit.text,
        score=hit.score,
        metadata=_struct(hit.metadata),
        matched_modes=hit.modes,
    )
