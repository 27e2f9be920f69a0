import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_VECTOR: _ClassVar[SearchMode]
    SEARCH_MODE_KEYWORD: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]

class DistanceMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTANCE_METRIC_UNSPECIFIED: _ClassVar[DistanceMetric]
    DISTANCE_METRIC_COSINE: _ClassVar[DistanceMetric]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_NO_CONTEXT: _ClassVar[FinishReason]

class AnswerMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_MODE_UNSPECIFIED: _ClassVar[AnswerMode]
    ANSWER_MODE_GENERATIVE: _ClassVar[AnswerMode]
    ANSWER_MODE_EXTRACTIVE: _ClassVar[AnswerMode]
    ANSWER_MODE_AUTO: _ClassVar[AnswerMode]

class FilterOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_OPERATOR_UNSPECIFIED: _ClassVar[FilterOperator]
    FILTER_OPERATOR_EQ: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NE: _ClassVar[FilterOperator]
    FILTER_OPERATOR_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NOT_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LT: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LTE: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GT: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GTE: _ClassVar[FilterOperator]
    FILTER_OPERATOR_EXISTS: _ClassVar[FilterOperator]

class IngestJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_JOB_STATE_UNSPECIFIED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_PENDING: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_RUNNING: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_SUCCEEDED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_FAILED: _ClassVar[IngestJobState]
    INGEST_JOB_STATE_CANCELLED: _ClassVar[IngestJobState]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_VECTOR: SearchMode
SEARCH_MODE_KEYWORD: SearchMode
SEARCH_MODE_HYBRID: SearchMode
DISTANCE_METRIC_UNSPECIFIED: DistanceMetric
DISTANCE_METRIC_COSINE: DistanceMetric
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_NO_CONTEXT: FinishReason
ANSWER_MODE_UNSPECIFIED: AnswerMode
ANSWER_MODE_GENERATIVE: AnswerMode
ANSWER_MODE_EXTRACTIVE: AnswerMode
ANSWER_MODE_AUTO: AnswerMode
FILTER_OPERATOR_UNSPECIFIED: FilterOperator
FILTER_OPERATOR_EQ: FilterOperator
FILTER_OPERATOR_NE: FilterOperator
FILTER_OPERATOR_IN: FilterOperator
FILTER_OPERATOR_NOT_IN: FilterOperator
FILTER_OPERATOR_LT: FilterOperator
FILTER_OPERATOR_LTE: FilterOperator
FILTER_OPERATOR_GT: FilterOperator
FILTER_OPERATOR_GTE: FilterOperator
FILTER_OPERATOR_EXISTS: FilterOperator
INGEST_JOB_STATE_UNSPECIFIED: IngestJobState
INGEST_JOB_STATE_PENDING: IngestJobState
INGEST_JOB_STATE_RUNNING: IngestJobState
INGEST_JOB_STATE_SUCCEEDED: IngestJobState
INGEST_JOB_STATE_FAILED: IngestJobState
INGEST_JOB_STATE_CANCELLED: IngestJobState

class Collection(_message.Message):
    __slots__ = ("name", "embedding_model", "dimension", "distance", "generation", "document_count", "chunk_count", "create_time", "migration_job_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    embedding_model: str
    dimension: int
    distance: DistanceMetric
    generation: int
    document_count: int
    chunk_count: int
    create_time: _timestamp_pb2.Timestamp
    migration_job_id: str
    def __init__(self, name: _Optional[str] = ..., embedding_model: _Optional[str] = ..., dimension: _Optional[int] = ..., distance: _Optional[_Union[DistanceMetric, str]] = ..., generation: _Optional[int] = ..., document_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., migration_job_id: _Optional[str] = ...) -> None: ...

class ChunkInput(_message.Message):
    __slots__ = ("text", "embedding", "token_count", "metadata")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    text: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    token_count: int
    metadata: _struct_pb2.Struct
    def __init__(self, text: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., token_count: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("collection", "document_id", "metadata", "content_hash", "chunk_count", "create_time", "update_time")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    metadata: _struct_pb2.Struct
    content_hash: str
    chunk_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content_hash: _Optional[str] = ..., chunk_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("chunk_id", "document_id", "ordinal", "text", "score", "metadata", "matched_modes")
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MATCHED_MODES_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    document_id: str
    ordinal: int
    text: str
    score: float
    metadata: _struct_pb2.Struct
    matched_modes: _containers.RepeatedScalarFieldContainer[SearchMode]
    def __init__(self, chunk_id: _Optional[str] = ..., document_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., matched_modes: _Optional[_Iterable[_Union[SearchMode, str]]] = ...) -> None: ...

class Passage(_message.Message):
    __slots__ = ("document_id", "chunk_id", "text", "score")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    chunk_id: str
    text: str
    score: float
    def __init__(self, document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("number", "document_id", "chunk_id", "snippet", "score")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    number: int
    document_id: str
    chunk_id: str
    snippet: str
    score: float
    def __init__(self, number: _Optional[int] = ..., document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., snippet: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class GenerationOptions(_message.Message):
    __slots__ = ("max_tokens", "temperature", "answer_mode")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MODE_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    answer_mode: AnswerMode
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., answer_mode: _Optional[_Union[AnswerMode, str]] = ...) -> None: ...

class SentenceSupport(_message.Message):
    __slots__ = ("text", "citations", "supported", "support", "unsupported_numbers")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    text: str
    citations: _containers.RepeatedScalarFieldContainer[int]
    supported: bool
    support: float
    unsupported_numbers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., citations: _Optional[_Iterable[int]] = ..., supported: _Optional[bool] = ..., support: _Optional[float] = ..., unsupported_numbers: _Optional[_Iterable[str]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "duration_seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    duration_seconds: float
    def __init__(self, stage: _Optional[str] = ..., duration_seconds: _Optional[float] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("field", "operator", "value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    operator: FilterOperator
    value: _struct_pb2.Value
    def __init__(self, field: _Optional[str] = ..., operator: _Optional[_Union[FilterOperator, str]] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class FilterGroup(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[MetadataFilter]
    def __init__(self, filters: _Optional[_Iterable[_Union[MetadataFilter, _Mapping]]] = ...) -> None: ...

class MetadataFilter(_message.Message):
    __slots__ = ("condition", "all", "any")
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    condition: FieldCondition
    all: FilterGroup
    any: FilterGroup
    def __init__(self, condition: _Optional[_Union[FieldCondition, _Mapping]] = ..., all: _Optional[_Union[FilterGroup, _Mapping]] = ..., any: _Optional[_Union[FilterGroup, _Mapping]] = ...) -> None: ...

class DocumentContent(_message.Message):
    __slots__ = ("document_id", "content", "media_type", "metadata")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    content: bytes
    media_type: str
    metadata: _struct_pb2.Struct
    def __init__(self, document_id: _Optional[str] = ..., content: _Optional[bytes] = ..., media_type: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IngestFailure(_message.Message):
    __slots__ = ("document_id", "reason", "attempts")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    reason: str
    attempts: int
    def __init__(self, document_id: _Optional[str] = ..., reason: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class IngestJob(_message.Message):
    __slots__ = ("job_id", "collection", "state", "accepting_documents", "total_documents", "done_documents", "skipped_documents", "failed_documents", "cancelled_documents", "written_chunks", "documents_per_second", "estimated_time_left", "create_time", "start_time", "end_time", "failures", "status_message", "migration")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTING_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DONE_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_TIME_LEFT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    collection: str
    state: IngestJobState
    accepting_documents: bool
    total_documents: int
    done_documents: int
    skipped_documents: int
    failed_documents: int
    cancelled_documents: int
    written_chunks: int
    documents_per_second: float
    estimated_time_left: _duration_pb2.Duration
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    failures: _containers.RepeatedCompositeFieldContainer[IngestFailure]
    status_message: str
    migration: CollectionMigration
    def __init__(self, job_id: _Optional[str] = ..., collection: _Optional[str] = ..., state: _Optional[_Union[IngestJobState, str]] = ..., accepting_documents: _Optional[bool] = ..., total_documents: _Optional[int] = ..., done_documents: _Optional[int] = ..., skipped_documents: _Optional[int] = ..., failed_documents: _Optional[int] = ..., cancelled_documents: _Optional[int] = ..., written_chunks: _Optional[int] = ..., documents_per_second: _Optional[float] = ..., estimated_time_left: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., failures: _Optional[_Iterable[_Union[IngestFailure, _Mapping]]] = ..., status_message: _Optional[str] = ..., migration: _Optional[_Union[CollectionMigration, _Mapping]] = ...) -> None: ...

class CollectionMigration(_message.Message):
    __slots__ = ("source_embedding_model", "target_embedding_model", "target_dimension")
    SOURCE_EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    source_embedding_model: str
    target_embedding_model: str
    target_dimension: int
    def __init__(self, source_embedding_model: _Optional[str] = ..., target_embedding_model: _Optional[str] = ..., target_dimension: _Optional[int] = ...) -> None: ...
