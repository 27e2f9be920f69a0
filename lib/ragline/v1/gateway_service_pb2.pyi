from ragline.v1 import common_pb2 as _common_pb2
from ragline.v1 import conversation_pb2 as _conversation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CachePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_POLICY_UNSPECIFIED: _ClassVar[CachePolicy]
    CACHE_POLICY_BYPASS: _ClassVar[CachePolicy]
    CACHE_POLICY_REFRESH: _ClassVar[CachePolicy]

class CacheLayer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_LAYER_UNSPECIFIED: _ClassVar[CacheLayer]
    CACHE_LAYER_NONE: _ClassVar[CacheLayer]
    CACHE_LAYER_EMBEDDING: _ClassVar[CacheLayer]
    CACHE_LAYER_RETRIEVAL: _ClassVar[CacheLayer]
    CACHE_LAYER_ANSWER: _ClassVar[CacheLayer]
    CACHE_LAYER_SEMANTIC: _ClassVar[CacheLayer]

class RerankStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RERANK_STATUS_UNSPECIFIED: _ClassVar[RerankStatus]
    RERANK_STATUS_APPLIED: _ClassVar[RerankStatus]
    RERANK_STATUS_SKIPPED: _ClassVar[RerankStatus]
    RERANK_STATUS_FAILED: _ClassVar[RerankStatus]
CACHE_POLICY_UNSPECIFIED: CachePolicy
CACHE_POLICY_BYPASS: CachePolicy
CACHE_POLICY_REFRESH: CachePolicy
CACHE_LAYER_UNSPECIFIED: CacheLayer
CACHE_LAYER_NONE: CacheLayer
CACHE_LAYER_EMBEDDING: CacheLayer
CACHE_LAYER_RETRIEVAL: CacheLayer
CACHE_LAYER_ANSWER: CacheLayer
CACHE_LAYER_SEMANTIC: CacheLayer
RERANK_STATUS_UNSPECIFIED: RerankStatus
RERANK_STATUS_APPLIED: RerankStatus
RERANK_STATUS_SKIPPED: RerankStatus
RERANK_STATUS_FAILED: RerankStatus

class IngestDocumentsRequest(_message.Message):
    __slots__ = ("collection", "documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.DocumentContent]
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.DocumentContent, _Mapping]]] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("document_id", "chunk_count", "unchanged_chunks", "inserted_chunks", "updated_chunks", "deleted_chunks")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INSERTED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DELETED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    chunk_count: int
    unchanged_chunks: int
    inserted_chunks: int
    updated_chunks: int
    deleted_chunks: int
    def __init__(self, document_id: _Optional[str] = ..., chunk_count: _Optional[int] = ..., unchanged_chunks: _Optional[int] = ..., inserted_chunks: _Optional[int] = ..., updated_chunks: _Optional[int] = ..., deleted_chunks: _Optional[int] = ...) -> None: ...

class IngestDocumentsResponse(_message.Message):
    __slots__ = ("results", "generation")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    generation: int
    def __init__(self, results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("collection", "text", "top_k", "candidates", "mode", "filter", "cache_policy")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    CACHE_POLICY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    text: str
    top_k: int
    candidates: int
    mode: _common_pb2.SearchMode
    filter: _common_pb2.MetadataFilter
    cache_policy: CachePolicy
    def __init__(self, collection: _Optional[str] = ..., text: _Optional[str] = ..., top_k: _Optional[int] = ..., candidates: _Optional[int] = ..., mode: _Optional[_Union[_common_pb2.SearchMode, str]] = ..., filter: _Optional[_Union[_common_pb2.MetadataFilter, _Mapping]] = ..., cache_policy: _Optional[_Union[CachePolicy, str]] = ...) -> None: ...

class AskRequest(_message.Message):
    __slots__ = ("query", "options", "conversation_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    query: Query
    options: _common_pb2.GenerationOptions
    conversation_id: str
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class AskResponse(_message.Message):
    __slots__ = ("answer", "citations", "usage", "finish_reason", "model", "stage_timings", "cache_layer", "rerank_status", "generation", "duration_seconds", "answer_mode", "not_found", "sentences", "relevance")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CACHE_LAYER_FIELD_NUMBER: _ClassVar[int]
    RERANK_STATUS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MODE_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    usage: _common_pb2.TokenUsage
    finish_reason: _common_pb2.FinishReason
    model: str
    stage_timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    cache_layer: CacheLayer
    rerank_status: RerankStatus
    generation: int
    duration_seconds: float
    answer_mode: _common_pb2.AnswerMode
    not_found: bool
    sentences: _containers.RepeatedCompositeFieldContainer[_common_pb2.SentenceSupport]
    relevance: float
    def __init__(self, answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., model: _Optional[str] = ..., stage_timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., cache_layer: _Optional[_Union[CacheLayer, str]] = ..., rerank_status: _Optional[_Union[RerankStatus, str]] = ..., generation: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., answer_mode: _Optional[_Union[_common_pb2.AnswerMode, str]] = ..., not_found: _Optional[bool] = ..., sentences: _Optional[_Iterable[_Union[_common_pb2.SentenceSupport, _Mapping]]] = ..., relevance: _Optional[float] = ...) -> None: ...

class AskStreamRequest(_message.Message):
    __slots__ = ("query", "options", "conversation_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    query: Query
    options: _common_pb2.GenerationOptions
    conversation_id: str
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ..., options: _Optional[_Union[_common_pb2.GenerationOptions, _Mapping]] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class RetrievedPassages(_message.Message):
    __slots__ = ("hits", "rerank_status")
    HITS_FIELD_NUMBER: _ClassVar[int]
    RERANK_STATUS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.SearchHit]
    rerank_status: RerankStatus
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.SearchHit, _Mapping]]] = ..., rerank_status: _Optional[_Union[RerankStatus, str]] = ...) -> None: ...

class AskStreamResponse(_message.Message):
    __slots__ = ("passages", "delta", "final")
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    passages: RetrievedPassages
    delta: str
    final: AskResponse
    def __init__(self, passages: _Optional[_Union[RetrievedPassages, _Mapping]] = ..., delta: _Optional[str] = ..., final: _Optional[_Union[AskResponse, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query",)
    QUERY_FIELD_NUMBER: _ClassVar[int]
    query: Query
    def __init__(self, query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "stage_timings", "cache_layer", "rerank_status", "generation", "duration_seconds")
    HITS_FIELD_NUMBER: _ClassVar[int]
    STAGE_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CACHE_LAYER_FIELD_NUMBER: _ClassVar[int]
    RERANK_STATUS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[_common_pb2.SearchHit]
    stage_timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    cache_layer: CacheLayer
    rerank_status: RerankStatus
    generation: int
    duration_seconds: float
    def __init__(self, hits: _Optional[_Iterable[_Union[_common_pb2.SearchHit, _Mapping]]] = ..., stage_timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., cache_layer: _Optional[_Union[CacheLayer, str]] = ..., rerank_status: _Optional[_Union[RerankStatus, str]] = ..., generation: _Optional[int] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: _common_pb2.Document
    def __init__(self, document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentResponse(_message.Message):
    __slots__ = ("deleted_chunks",)
    DELETED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    deleted_chunks: int
    def __init__(self, deleted_chunks: _Optional[int] = ...) -> None: ...

class CreateIngestJobRequest(_message.Message):
    __slots__ = ("collection", "documents")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.DocumentContent]
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.DocumentContent, _Mapping]]] = ...) -> None: ...

class CreateIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class UploadIngestDocumentsRequest(_message.Message):
    __slots__ = ("collection", "document")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document: _common_pb2.DocumentContent
    def __init__(self, collection: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.DocumentContent, _Mapping]] = ...) -> None: ...

class UploadIngestDocumentsResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class GetIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class ListIngestJobsRequest(_message.Message):
    __slots__ = ("collection", "page_size", "page_token")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page_size: int
    page_token: str
    def __init__(self, collection: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIngestJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_common_pb2.IngestJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_common_pb2.IngestJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelIngestJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...
