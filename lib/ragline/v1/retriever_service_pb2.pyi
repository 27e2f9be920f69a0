import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ragline.v1 import common_pb2 as _common_pb2
from ragline.v1 import ingest_queue_service_pb2 as _ingest_queue_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CollectionView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLLECTION_VIEW_UNSPECIFIED: _ClassVar[CollectionView]
    COLLECTION_VIEW_BASIC: _ClassVar[CollectionView]
    COLLECTION_VIEW_FULL: _ClassVar[CollectionView]
COLLECTION_VIEW_UNSPECIFIED: CollectionView
COLLECTION_VIEW_BASIC: CollectionView
COLLECTION_VIEW_FULL: CollectionView

class MigrateStoredCollectionRequest(_message.Message):
    __slots__ = ("tenant", "name", "embedding_model", "dimension")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    embedding_model: str
    dimension: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., embedding_model: _Optional[str] = ..., dimension: _Optional[int] = ...) -> None: ...

class MigrateStoredCollectionResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class CreateStoredCollectionRequest(_message.Message):
    __slots__ = ("name", "embedding_model", "dimension", "distance", "tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    embedding_model: str
    dimension: int
    distance: _common_pb2.DistanceMetric
    tenant: str
    def __init__(self, name: _Optional[str] = ..., embedding_model: _Optional[str] = ..., dimension: _Optional[int] = ..., distance: _Optional[_Union[_common_pb2.DistanceMetric, str]] = ..., tenant: _Optional[str] = ...) -> None: ...

class CreateStoredCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: _common_pb2.Collection
    def __init__(self, collection: _Optional[_Union[_common_pb2.Collection, _Mapping]] = ...) -> None: ...

class GetStoredCollectionRequest(_message.Message):
    __slots__ = ("name", "view", "tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    view: CollectionView
    tenant: str
    def __init__(self, name: _Optional[str] = ..., view: _Optional[_Union[CollectionView, str]] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetStoredCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: _common_pb2.Collection
    def __init__(self, collection: _Optional[_Union[_common_pb2.Collection, _Mapping]] = ...) -> None: ...

class ListStoredCollectionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tenant")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListStoredCollectionsResponse(_message.Message):
    __slots__ = ("collections", "next_page_token")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[_common_pb2.Collection]
    next_page_token: str
    def __init__(self, collections: _Optional[_Iterable[_Union[_common_pb2.Collection, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteStoredCollectionRequest(_message.Message):
    __slots__ = ("name", "tenant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DeleteStoredCollectionResponse(_message.Message):
    __slots__ = ("deleted_documents",)
    DELETED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    deleted_documents: int
    def __init__(self, deleted_documents: _Optional[int] = ...) -> None: ...

class UpsertDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id", "metadata", "chunks", "content_hash", "claim", "tenant", "embedding_model")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    metadata: _struct_pb2.Struct
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkInput]
    content_hash: str
    claim: _ingest_queue_service_pb2.IngestClaim
    tenant: str
    embedding_model: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkInput, _Mapping]]] = ..., content_hash: _Optional[str] = ..., claim: _Optional[_Union[_ingest_queue_service_pb2.IngestClaim, _Mapping]] = ..., tenant: _Optional[str] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class UpsertDocumentResponse(_message.Message):
    __slots__ = ("document", "unchanged_chunks", "inserted_chunks", "updated_chunks", "deleted_chunks", "generation")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INSERTED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DELETED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    document: _common_pb2.Document
    unchanged_chunks: int
    inserted_chunks: int
    updated_chunks: int
    deleted_chunks: int
    generation: int
    def __init__(self, document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., unchanged_chunks: _Optional[int] = ..., inserted_chunks: _Optional[int] = ..., updated_chunks: _Optional[int] = ..., deleted_chunks: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class BatchUpsertDocumentsRequest(_message.Message):
    __slots__ = ("collection", "requests", "tenant", "embedding_model")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    requests: _containers.RepeatedCompositeFieldContainer[UpsertDocumentRequest]
    tenant: str
    embedding_model: str
    def __init__(self, collection: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[UpsertDocumentRequest, _Mapping]]] = ..., tenant: _Optional[str] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class BatchUpsertDocumentsResponse(_message.Message):
    __slots__ = ("responses", "generation")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[UpsertDocumentResponse]
    generation: int
    def __init__(self, responses: _Optional[_Iterable[_Union[UpsertDocumentResponse, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class SearchChunksRequest(_message.Message):
    __slots__ = ("collection", "query_text", "query_embedding", "top_k", "mode", "filter", "ef_search", "bm25_k1", "bm25_b", "rrf_k", "vector_weight", "keyword_weight", "tenant", "min_generation", "collection_create_time", "embedding_model")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    QUERY_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    BM25_K1_FIELD_NUMBER: _ClassVar[int]
    BM25_B_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    VECTOR_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MIN_GENERATION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query_text: str
    query_embedding: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    mode: _common_pb2.SearchMode
    filter: _common_pb2.MetadataFilter
    ef_search: int
    bm25_k1: float
    bm25_b: float
    rrf_k: int
    vector_weight: float
    keyword_weight: float
    tenant: str
    min_generation: int
    collection_create_time: _timestamp_pb2.Timestamp
    embedding_model: str
    def __init__(self, collection: _Optional[str] = ..., query_text: _Optional[str] = ..., query_embedding: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_common_pb2.MetadataFilter, _Mapping]] = ..., ef_search: _Optional[int] = ..., bm25_k1: _Optional[float] = ..., bm25_b: _Optional[float] = ..., rrf_k: _Optional[int] = ..., vector_weight: _Optional[float] = ..., keyword_weight: _Optional[float] = ..., tenant: _Optional[str] = ..., min_generation: _Optional[int] = ..., collection_create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class SearchChunksResponse(_message.Message):
    __slots__ = ("hits", "generation")
    HITS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.SearchHit]
    generation: int
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.SearchHit, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class GetStoredDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetStoredDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: _common_pb2.Document
    def __init__(self, document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class ListStoredDocumentsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class ListStoredDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteStoredDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class DeleteStoredDocumentResponse(_message.Message):
    __slots__ = ("deleted_chunks", "generation")
    DELETED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    deleted_chunks: int
    generation: int
    def __init__(self, deleted_chunks: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class LookupChunkHashesRequest(_message.Message):
    __slots__ = ("collection", "content_hashes", "document_id", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASHES_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    content_hashes: _containers.RepeatedScalarFieldContainer[str]
    document_id: str
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., content_hashes: _Optional[_Iterable[str]] = ..., document_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class LookupChunkHashesResponse(_message.Message):
    __slots__ = ("stored_hashes",)
    STORED_HASHES_FIELD_NUMBER: _ClassVar[int]
    stored_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stored_hashes: _Optional[_Iterable[str]] = ...) -> None: ...
