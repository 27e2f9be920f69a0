"""Every limit of the retriever's API and the checks of its requests, run before the database is touched.

Each check raises INVALID_ARGUMENT naming the field to fix, so a bad request never reaches a
transaction; the handlers of both services call these and pass on what they return. The checks
the gateway makes too (names, ids, metadata, filters, query text) are `ragline.validation`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ragline.errors import InvalidArgument, ServiceError
from ragline.metrics import SEARCH_MODE_LABELS
from ragline.v1 import common_pb2
from ragline.v1 import retriever_service_pb2 as pb
from ragline.validation import (
    MAX_BATCH_DOCUMENTS,
    MAX_ID_CHARS,
    MAX_QUERY_CHARS,
    check_collection_name,
    check_document_id,
    check_filter,
    check_tenant,
    check_text,
    metadata_dict,
)
from ragline_retriever.chunks import NewChunk, text_hash
from ragline_retriever.config import RetrieverConfig

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_DIMENSION = 4000
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
# pgvector's bounds of hnsw.ef_search.
MAX_EF_SEARCH = 1000
MAX_BM25_K1 = 10.0
MAX_RRF_K = 1000
MAX_FUSION_WEIGHT = 100.0
MAX_LOOKUP_HASHES = 10_000
# Embeddings are indexed as halfvec (16-bit floats), which cannot hold larger magnitudes.
HALFVEC_MAX = 65504.0


@dataclass(frozen=True)
class SearchOptions:
    """The tuning of one search: the request's values or the configured defaults."""

    ef_search: int
    """The HNSW candidate list size of the vector query."""
    rrf_k: int
    """The reciprocal rank fusion constant of hybrid search."""
    bm25_k1: float
    """BM25's term-frequency saturation."""
    bm25_b: float
    """BM25's length normalisation."""
    vector_weight: float
    """The weight of the vector ranking in hybrid fusion."""
    keyword_weight: float
    """The weight of the keyword ranking in hybrid fusion."""


@dataclass(frozen=True)
class ValidSearch:
    """A SearchChunks request that passed every check, with its defaults filled in."""

    tenant: str
    """The tenant whose collection to search."""
    name: str
    """The collection to search."""
    mode: common_pb2.SearchMode
    """The search mode; unset in the request means hybrid."""
    top_k: int
    """The most hits to return."""
    options: SearchOptions
    """The request's tuning knobs, or the configured defaults."""


def validate_new_collection(request: pb.CreateStoredCollectionRequest) -> tuple[str, str]:
    """The tenant and name of the collection a CreateStoredCollection request may create."""
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.name, "name")
    check_text(request.embedding_model, "embedding_model", MAX_ID_CHARS)
    if not 1 <= request.dimension <= MAX_DIMENSION:
        raise InvalidArgument(f"dimension must be from 1 to {MAX_DIMENSION}", field="dimension")
    if request.distance not in (
        common_pb2.DISTANCE_METRIC_UNSPECIFIED,
        common_pb2.DISTANCE_METRIC_COSINE,
    ):
        raise InvalidArgument(
            "distance must be DISTANCE_METRIC_COSINE (the only one supported)", field="distance"
        )
    return tenant, name


def validate_migration(request: pb.MigrateStoredCollectionRequest) -> tuple[str, str, str]:
    """The tenant, collection name and target model of a MigrateStoredCollection request."""
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.name, "name")
    if not request.embedding_model.strip():
        raise InvalidArgument(
            "embedding_model is required: the model to move the collection to", field="embedding_model"
        )
    model = check_text(request.embedding_model, "embedding_model", MAX_ID_CHARS)
    if not 1 <= request.dimension <= MAX_DIMENSION:
        raise InvalidArgument(f"dimension must be from 1 to {MAX_DIMENSION}", field="dimension")
    return tenant, name, model


def validate_embedding(
    values: Sequence[float], dimension: int, field: str, collection: str
) -> NDArray[np.float32]:
    """`values` as an array if the collection of `dimension` can store and compare them."""
    if len(values) != dimension:
        raise InvalidArgument(
            f"{field} has {len(values)} values but collection {collection!r} has dimension {dimension}",
            field=field,
        )
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all() or float(np.abs(array).max()) > HALFVEC_MAX:
        raise InvalidArgument(f"{field} must hold finite values within ±{HALFVEC_MAX:g}", field=field)
    if not array.any():
        raise InvalidArgument(f"{field} is all zeros, which has no cosine distance to anything", field=field)
    return array


def validate_upsert(request: pb.UpsertDocumentRequest) -> tuple[str, str, str]:
    """The tenant, collection name and document id of an UpsertDocument request whose fields (but
    the chunks' embeddings, which need the collection's dimension) are valid."""
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.collection, "collection")
    document_id = check_document_id(request.document_id, "document_id")
    metadata_dict(request.metadata, "metadata")
    if not request.chunks:
        raise InvalidArgument("a document needs at least one chunk", field="chunks")
    if request.content_hash and not SHA256_HEX.match(request.content_hash):
        raise InvalidArgument("content_hash must be a lowercase SHA-256 hex digest", field="content_hash")
    return tenant, name, document_id


def in_batch(error: ServiceError, index: int, document_id: str) -> ServiceError:
    """`error`, raised for the document `document_id` of a batch, naming its place `requests[index]`."""
    field = f"requests[{index}]" + (f".{error.field}" if error.field else "")
    named = ServiceError(
        f"requests[{index}] (document {document_id!r}): {error.message}",
        field=field,
        reason=error.reason,
        retry_after=error.retry_after,
    )
    named.code = error.code
    return named


def validate_batch_upsert(request: pb.BatchUpsertDocumentsRequest) -> tuple[str, str, list[str]]:
    """The tenant, collection name and document ids of a BatchUpsertDocuments request whose
    documents' fields (but their embeddings) are valid; each request's `collection` and `tenant`
    are set to the batch's."""
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.collection, "collection")
    if not 1 <= len(request.requests) <= MAX_BATCH_DOCUMENTS:
        raise InvalidArgument(
            f"requests has {len(request.requests)} documents; send from 1 to {MAX_BATCH_DOCUMENTS}",
            field="requests",
        )
    document_ids: list[str] = []
    first: dict[str, int] = {}
    for i, upsert in enumerate(request.requests):
        try:
            if upsert.collection not in ("", name):
                raise InvalidArgument(
                    f"collection {upsert.collection!r} differs from the batch's {name!r}; leave it empty",
                    field="collection",
                )
            if upsert.tenant not in ("", tenant):
                # Not quoted back: a mismatch is a caller's bug, and the message goes to that caller.
                raise InvalidArgument("tenant differs from the batch's; leave it empty", field="tenant")
            if upsert.HasField("claim"):
                raise InvalidArgument(
                    "a batch does not finish ingest claims; store a claimed document with UpsertDocument",
                    field="claim",
                )
            upsert.collection = name
            upsert.tenant = tenant
            _, _, document_id = validate_upsert(upsert)
            if document_id in first:
                raise InvalidArgument(
                    f"the document is also requests[{first[document_id]}]; send each document once",
                    field="document_id",
                )
        except InvalidArgument as exc:
            raise in_batch(exc, i, upsert.document_id) from None
        first[document_id] = i
        document_ids.append(document_id)
    return tenant, name, document_ids


def new_chunks(request: pb.UpsertDocumentRequest, dimension: int) -> list[NewChunk]:
    """The request's chunks, validated; those sent without an embedding have `embedding` None."""
    chunks = []
    for i, chunk in enumerate(request.chunks):
        if not chunk.text or "\x00" in chunk.text:
            raise InvalidArgument(
                f"chunks[{i}].text is empty or has NUL characters", field=f"chunks[{i}].text"
            )
        if chunk.token_count < 0:
            raise InvalidArgument(f"chunks[{i}].token_count is negative", field=f"chunks[{i}].token_count")
        embedding = (
            validate_embedding(chunk.embedding, dimension, f"chunks[{i}].embedding", request.collection)
            if chunk.embedding
            else None
        )
        chunks.append(
            NewChunk(
                ordinal=i,
                text=chunk.text,
                content_hash=text_hash(chunk.text),
                token_count=chunk.token_count,
                metadata=metadata_dict(chunk.metadata, f"chunks[{i}].metadata"),
                embedding=embedding,
            )
        )
    return chunks


def validate_lookup(request: pb.LookupChunkHashesRequest) -> tuple[str, str, str, list[str]]:
    """The tenant, collection name, document id ("" for none) and distinct hashes of a
    LookupChunkHashes request."""
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.collection, "collection")
    document_id = check_document_id(request.document_id, "document_id") if request.document_id else ""
    hashes = list(dict.fromkeys(request.content_hashes))
    if len(hashes) > MAX_LOOKUP_HASHES:
        raise InvalidArgument(
            f"content_hashes has {len(hashes)} hashes; look up at most {MAX_LOOKUP_HASHES} at a time",
            field="content_hashes",
        )
    for i, value in enumerate(request.content_hashes):
        if not SHA256_HEX.match(value):
            raise InvalidArgument(
                f"content_hashes[{i}] is not a lowercase SHA-256 hex digest", field=f"content_hashes[{i}]"
            )
    if not hashes and not document_id:
        raise InvalidArgument(
            "give content_hashes to look up, or a document_id to list that document's hashes",
            field="content_hashes",
        )
    return tenant, name, document_id, hashes


def validate_search(request: pb.SearchChunksRequest, config: RetrieverConfig) -> ValidSearch:
    """A SearchChunks request checked field by field, with the defaults of what it left unset.

    The query embedding's length is checked later, against the collection's dimension.
    """
    tenant = check_tenant(request.tenant)
    name = check_collection_name(request.collection, "collection")
    mode = request.mode or common_pb2.SEARCH_MODE_HYBRID
    if mode not in SEARCH_MODE_LABELS:
        raise InvalidArgument(f"unknown search mode {request.mode}", field="mode")
    top_k = request.top_k or DEFAULT_TOP_K
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgument(f"top_k must be from 1 to {MAX_TOP_K} (0 means {DEFAULT_TOP_K})", field="top_k")
    use_vector = mode in (common_pb2.SEARCH_MODE_VECTOR, common_pb2.SEARCH_MODE_HYBRID)
    use_keyword = mode in (common_pb2.SEARCH_MODE_KEYWORD, common_pb2.SEARCH_MODE_HYBRID)
    if use_keyword and not request.query_text.strip():
        raise InvalidArgument(
            f"query_text is empty; {SEARCH_MODE_LABELS[mode]} search needs it", field="query_text"
        )
    if use_vector and not request.query_embedding:
        raise InvalidArgument(
            f"query_embedding is empty; {SEARCH_MODE_LABELS[mode]} search needs it", field="query_embedding"
        )
    check_text(request.query_text, "query_text", MAX_QUERY_CHARS)
    if request.HasField("filter"):
        check_filter(request.filter)
    return ValidSearch(tenant, name, mode, top_k, _search_options(request, config))


def _search_options(request: pb.SearchChunksRequest, config: RetrieverConfig) -> SearchOptions:
    """The request's tuning knobs, validated, with the configured defaults for those left unset."""
    if not 0 <= request.ef_search <= MAX_EF_SEARCH:
        raise InvalidArgument(
            f"ef_search must be from 1 to {MAX_EF_SEARCH} (0 means {config.hnsw_ef_search})",
            field="ef_search",
        )
    if not 0 <= request.rrf_k <= MAX_RRF_K:
        raise InvalidArgument(f"rrf_k must be from 1 to {MAX_RRF_K} (0 means {config.rrf_k})", field="rrf_k")
    bounds = {
        "bm25_k1": (0.0, MAX_BM25_K1, config.bm25_k1),
        "bm25_b": (0.0, 1.0, config.bm25_b),
        "vector_weight": (0.0, MAX_FUSION_WEIGHT, 1.0),
        "keyword_weight": (0.0, MAX_FUSION_WEIGHT, 1.0),
    }
    values = {}
    for field, (low, high, default) in bounds.items():
        value = getattr(request, field) if request.HasField(field) else default
        if not (math.isfinite(value) and low <= value <= high):
            raise InvalidArgument(f"{field} must be from {low:g} to {high:g}", field=field)
        values[field] = value
    return SearchOptions(
        ef_search=request.ef_search or config.hnsw_ef_search,
        rrf_k=request.rrf_k or config.rrf_k,
        **values,
    )
