import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from ragline.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestClaim(_message.Message):
    __slots__ = ("job_id", "ordinal", "claim_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    CLAIM_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ordinal: int
    claim_token: str
    def __init__(self, job_id: _Optional[str] = ..., ordinal: _Optional[int] = ..., claim_token: _Optional[str] = ...) -> None: ...

class CreateStoredIngestJobRequest(_message.Message):
    __slots__ = ("collection", "documents", "accepting_documents", "tenant")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTING_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.DocumentContent]
    accepting_documents: bool
    tenant: str
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.DocumentContent, _Mapping]]] = ..., accepting_documents: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class CreateStoredIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class AppendStoredIngestJobRequest(_message.Message):
    __slots__ = ("job_id", "documents", "last", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.DocumentContent]
    last: bool
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.DocumentContent, _Mapping]]] = ..., last: _Optional[bool] = ..., tenant: _Optional[str] = ...) -> None: ...

class AppendStoredIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class GetStoredIngestJobRequest(_message.Message):
    __slots__ = ("job_id", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetStoredIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class ListStoredIngestJobsRequest(_message.Message):
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

class ListStoredIngestJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_common_pb2.IngestJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_common_pb2.IngestJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelStoredIngestJobRequest(_message.Message):
    __slots__ = ("job_id", "reason", "tenant")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    tenant: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class CancelStoredIngestJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _common_pb2.IngestJob
    def __init__(self, job: _Optional[_Union[_common_pb2.IngestJob, _Mapping]] = ...) -> None: ...

class ClaimIngestWorkRequest(_message.Message):
    __slots__ = ("max_documents", "lease_seconds", "max_attempts")
    MAX_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    max_documents: int
    lease_seconds: float
    max_attempts: int
    def __init__(self, max_documents: _Optional[int] = ..., lease_seconds: _Optional[float] = ..., max_attempts: _Optional[int] = ...) -> None: ...

class ClaimedDocument(_message.Message):
    __slots__ = ("claim", "collection", "document", "attempt", "tenant", "trace_parent", "migration", "chunks", "content_hash")
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    claim: IngestClaim
    collection: str
    document: _common_pb2.DocumentContent
    attempt: int
    tenant: str
    trace_parent: str
    migration: _common_pb2.CollectionMigration
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChunkInput]
    content_hash: str
    def __init__(self, claim: _Optional[_Union[IngestClaim, _Mapping]] = ..., collection: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.DocumentContent, _Mapping]] = ..., attempt: _Optional[int] = ..., tenant: _Optional[str] = ..., trace_parent: _Optional[str] = ..., migration: _Optional[_Union[_common_pb2.CollectionMigration, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[_common_pb2.ChunkInput, _Mapping]]] = ..., content_hash: _Optional[str] = ...) -> None: ...

class ClaimIngestWorkResponse(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[ClaimedDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[ClaimedDocument, _Mapping]]] = ...) -> None: ...

class FailIngestWorkRequest(_message.Message):
    __slots__ = ("claim", "reason", "retry_after")
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    claim: IngestClaim
    reason: str
    retry_after: _duration_pb2.Duration
    def __init__(self, claim: _Optional[_Union[IngestClaim, _Mapping]] = ..., reason: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FailIngestWorkResponse(_message.Message):
    __slots__ = ("requeued",)
    REQUEUED_FIELD_NUMBER: _ClassVar[int]
    requeued: bool
    def __init__(self, requeued: _Optional[bool] = ...) -> None: ...

class RenewIngestWorkRequest(_message.Message):
    __slots__ = ("claims", "lease_seconds")
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[IngestClaim]
    lease_seconds: float
    def __init__(self, claims: _Optional[_Iterable[_Union[IngestClaim, _Mapping]]] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class RenewIngestWorkResponse(_message.Message):
    __slots__ = ("renewed",)
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    renewed: _containers.RepeatedCompositeFieldContainer[IngestClaim]
    def __init__(self, renewed: _Optional[_Iterable[_Union[IngestClaim, _Mapping]]] = ...) -> None: ...
