"""The typed async client for Ragline's public API, for internal services and the `ragline` command.

It wraps the generated `GatewayServiceStub` with one method per RPC, keyword arguments
with defaults, a default deadline on every call, and the shared channel settings
(keepalive, retries of UNAVAILABLE), and the caller's API key on every call. Errors arrive as
`grpc.aio.AioRpcError`, whose `code()` and `details()` say what went wrong and whose request id
(`request_id_of`) names the call's trace. The admin methods
(API keys and collections of the caller's tenant) call the gateway's AdminService on the same channel.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypedDict, Unpack

import grpc
from google.protobuf import struct_pb2

from ragline.api_keys import client_token
from ragline.channels import open_channel
from ragline.errors import REQUEST_ID_KEY
from ragline.tls import ClientCertificates
from ragline.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    common_pb2,
    conversation_pb2,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
)

DEFAULT_ADDRESS = "127.0.0.1:50051"


def request_id_of(error: grpc.RpcError) -> str:
    """The request id a failed call was answered with (its trace id), or "" when it carries none."""
    # AioRpcError and the blocking API's errors both have trailing_metadata, but share no class that says so.
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == REQUEST_ID_KEY:
            return str(value)
    return ""


class QueryOptions(TypedDict, total=False):
    """How `ask`, `ask_stream` and `search` look for passages; a key left out leaves the gateway's default."""

    collection: str
    """The collection to search; the gateway's default collection when absent."""
    top_k: int
    """How many passages to return (Search, up to 1000) or to answer from (Ask, up to 50)."""
    candidates: int
    """How many candidates to retrieve before reranking, from top_k to 1000."""
    mode: common_pb2.SearchMode
    """How to rank the chunks: hybrid (the default), vector or keyword."""
    cache_policy: gateway_service_pb2.CachePolicy
    """Whether the cache may serve and store the request (the default: read and write it)."""
    filter: common_pb2.MetadataFilter | None
    """Only chunks whose metadata matches are used; None means all."""
    grouping: gateway_service_pb2.ResultGrouping
    """Hits as chunks (the default) or one per document (RESULT_GROUPING_DOCUMENT)."""
    second_chunk_share: float
    """With document grouping, the share of a document's second-best chunk score added to its best's."""


@dataclass(frozen=True)
class DocumentToIngest:
    """One document for `RaglineClient.ingest`."""

    document_id: str
    """The document's id within its collection, e.g. its path."""
    content: bytes
    """The document's UTF-8 bytes."""
    media_type: str = ""
    """"text/plain" or "text/markdown"; empty means plain text."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Metadata stored with the document and returned with its chunks."""

    def to_proto(self) -> common_pb2.DocumentContent:
        metadata = struct_pb2.Struct()
        metadata.update(dict(self.metadata))
        return common_pb2.DocumentContent(
            document_id=self.document_id, content=self.content, media_type=self.media_type, metadata=metadata
        )


class RaglineClient:
    """An async client of the gateway: `async with RaglineClient() as client: await client.ask("...")`."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 120.0,
        api_key: str | None = None,
        certificates: ClientCertificates | None = None,
    ) -> None:
        """Connects to `address` (host:port), default `RAGLINE_GATEWAY_ADDR` or 127.0.0.1:50051.

        `timeout` is the deadline, in seconds, of each call that does not set its own. `api_key` is
        the credential sent with every call (an API key or a JWT); by default `RAGLINE_API_KEY`, else
        the key `make run` keeps in the state folder (`RAGLINE_STATE_DIR/api_key`), else none.
        `certificates` are the TLS settings to dial with; by default RAGLINE_TLS_CA_FILE (TLS, verifying
        the gateway's certificate) and RAGLINE_TLS_CERT_FILE / RAGLINE_TLS_KEY_FILE, else plaintext.
        """
        self.address = address or os.environ.get("RAGLINE_GATEWAY_ADDR") or DEFAULT_ADDRESS
        self.timeout = timeout
        credential = api_key or client_token()
        self._metadata = (("authorization", f"Bearer {credential}"),) if credential else ()
        self._channel = open_channel(
            self.address, "ragline.v1.GatewayService", "ragline.v1.AdminService", certificates=certificates
        )
        self._stub = gateway_service_pb2_grpc.GatewayServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    async def __aenter__(self) -> RaglineClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def ingest(
        self,
        documents: Iterable[DocumentToIngest],
        *,
        collection: str = "",
        timeout: float | None = None,
    ) -> gateway_service_pb2.IngestDocumentsResponse:
        """Chunks, embeds and stores documents; re-ingesting an id replaces that document."""
        request = gateway_service_pb2.IngestDocumentsRequest(
            collection=collection, documents=[d.to_proto() for d in documents]
        )
        response: gateway_service_pb2.IngestDocumentsResponse = await self._call(
            self._stub.IngestDocuments, request, timeout
        )
        return response

    async def ask(
        self,
        question: str,
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
        answer_mode: common_pb2.AnswerMode = common_pb2.ANSWER_MODE_UNSPECIFIED,
        timeout: float | None = None,
        conversation_id: str = "",
        **query: Unpack[QueryOptions],
    ) -> gateway_service_pb2.AskResponse:
        """Answers `question` from the collection's documents, with citations; with a `conversation_id`, as
        the next turn of that conversation (a follow-up is understood from the earlier turns)."""
        request = gateway_service_pb2.AskRequest(
            query=_query(question, query),
            options=_generation(max_tokens, temperature, answer_mode),
            conversation_id=conversation_id,
        )
        response: gateway_service_pb2.AskResponse = await self._call(self._stub.Ask, request, timeout)
        return response

    async def ask_stream(
        self,
        question: str,
        *,
        max_tokens: int = 0,
        temperature: float = 0.0,
        answer_mode: common_pb2.AnswerMode = common_pb2.ANSWER_MODE_UNSPECIFIED,
        timeout: float | None = None,
        conversation_id: str = "",
        **query: Unpack[QueryOptions],
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        """Streams an answer: the retrieved passages, then text deltas, then the final answer with citations;
        `conversation_id` as for `ask`."""
        request = gateway_service_pb2.AskStreamRequest(
            query=_query(question, query),
            options=_generation(max_tokens, temperature, answer_mode),
            conversation_id=conversation_id,
        )
        async for event in self._stub.AskStream(
            request, timeout=timeout or self.timeout, metadata=self._metadata
        ):
            yield event

    async def search(
        self, query: str, *, timeout: float | None = None, **options: Unpack[QueryOptions]
    ) -> gateway_service_pb2.SearchResponse:
        """Returns the chunks that best match `query`, without generating an answer."""
        request = gateway_service_pb2.SearchRequest(query=_query(query, options))
        response: gateway_service_pb2.SearchResponse = await self._call(self._stub.Search, request, timeout)
        return response

    async def get_document(
        self, document_id: str, *, collection: str = "", timeout: float | None = None
    ) -> common_pb2.Document:
        """Returns one ingested document."""
        request = gateway_service_pb2.GetDocumentRequest(collection=collection, document_id=document_id)
        response: gateway_service_pb2.GetDocumentResponse = await self._call(
            self._stub.GetDocument, request, timeout
        )
        return response.document

    async def list_documents(
        self, *, collection: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> gateway_service_pb2.ListDocumentsResponse:
        """Returns one page of a collection's documents; pass `next_page_token` back for the next."""
        request = gateway_service_pb2.ListDocumentsRequest(
            collection=collection, page_size=page_size, page_token=page_token
        )
        response: gateway_service_pb2.ListDocumentsResponse = await self._call(
            self._stub.ListDocuments, request, timeout
        )
        return response

    async def delete_document(
        self, document_id: str, *, collection: str = "", timeout: float | None = None
    ) -> gateway_service_pb2.DeleteDocumentResponse:
        """Deletes an ingested document and its chunks."""
        request = gateway_service_pb2.DeleteDocumentRequest(collection=collection, document_id=document_id)
        response: gateway_service_pb2.DeleteDocumentResponse = await self._call(
            self._stub.DeleteDocument, request, timeout
        )
        return response

    async def create_ingest_job(
        self, documents: Iterable[DocumentToIngest], *, collection: str = "", timeout: float | None = None
    ) -> common_pb2.IngestJob:
        """Records a batch of documents durably and returns the job that ingests them, without waiting for it."""
        request = gateway_service_pb2.CreateIngestJobRequest(
            collection=collection, documents=[d.to_proto() for d in documents]
        )
        return await self._job(self._stub.CreateIngestJob, request, timeout)

    async def upload_ingest_documents(
        self,
        documents: Iterable[DocumentToIngest] | AsyncIterator[DocumentToIngest],
        *,
        collection: str = "",
        timeout: float | None = None,
    ) -> common_pb2.IngestJob:
        """Streams documents into a new job (one message per document) and returns the job once all are recorded.

        `documents` may be lazy (a generator reading files), so a large upload never sits in memory whole.
        """

        async def messages() -> AsyncIterator[gateway_service_pb2.UploadIngestDocumentsRequest]:
            if isinstance(documents, AsyncIterator):
                async for document in documents:
                    yield gateway_service_pb2.UploadIngestDocumentsRequest(
                        collection=collection, document=document.to_proto()
                    )
            else:
                for document in documents:
                    yield gateway_service_pb2.UploadIngestDocumentsRequest(
                        collection=collection, document=document.to_proto()
                    )

        return await self._job(self._stub.UploadIngestDocuments, messages(), timeout)

    async def get_ingest_job(self, job_id: str, *, timeout: float | None = None) -> common_pb2.IngestJob:
        """Returns where an ingest job stands, with its failures."""
        request = gateway_service_pb2.GetIngestJobRequest(job_id=job_id)
        return await self._job(self._stub.GetIngestJob, request, timeout)

    async def list_ingest_jobs(
        self, *, collection: str = "", page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> gateway_service_pb2.ListIngestJobsResponse:
        """Returns one page of ingest jobs, newest first; pass `next_page_token` back for the next."""
        request = gateway_service_pb2.ListIngestJobsRequest(
            collection=collection, page_size=page_size, page_token=page_token
        )
        response: gateway_service_pb2.ListIngestJobsResponse = await self._call(
            self._stub.ListIngestJobs, request, timeout
        )
        return response

    async def cancel_ingest_job(self, job_id: str, *, timeout: float | None = None) -> common_pb2.IngestJob:
        """Cancels an ingest job; documents already stored stay."""
        request = gateway_service_pb2.CancelIngestJobRequest(job_id=job_id)
        return await self._job(self._stub.CancelIngestJob, request, timeout)

    async def list_conversations(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> conversation_pb2.ListConversationsResponse:
        """Returns one page of conversations, most recently updated first; pass `next_page_token` back for the next."""
        request = conversation_pb2.ListConversationsRequest(page_size=page_size, page_token=page_token)
        response: conversation_pb2.ListConversationsResponse = await self._call(
            self._stub.ListConversations, request, timeout
        )
        return response

    async def get_conversation(
        self, conversation_id: str, *, timeout: float | None = None
    ) -> conversation_pb2.GetConversationResponse:
        """Returns a conversation with its turns, oldest first."""
        request = conversation_pb2.GetConversationRequest(conversation_id=conversation_id)
        response: conversation_pb2.GetConversationResponse = await self._call(
            self._stub.GetConversation, request, timeout
        )
        return response

    async def delete_conversation(self, conversation_id: str, *, timeout: float | None = None) -> int:
        """Deletes a conversation; returns how many turns it had."""
        request = conversation_pb2.DeleteConversationRequest(conversation_id=conversation_id)
        response: conversation_pb2.DeleteConversationResponse = await self._call(
            self._stub.DeleteConversation, request, timeout
        )
        return response.deleted_turns

    async def create_api_key(
        self, role: admin_service_pb2.Role, *, display_name: str = "", timeout: float | None = None
    ) -> admin_service_pb2.CreateApiKeyResponse:
        """Creates an API key in the caller's tenant (an admin call); the response's `token` is shown only here."""
        request = admin_service_pb2.CreateApiKeyRequest(role=role, display_name=display_name)
        response: admin_service_pb2.CreateApiKeyResponse = await self._call(
            self._admin.CreateApiKey, request, timeout
        )
        return response

    async def list_api_keys(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> admin_service_pb2.ListApiKeysResponse:
        """Returns one page of the caller's tenant's API keys, oldest first, revoked ones included."""
        request = admin_service_pb2.ListApiKeysRequest(page_size=page_size, page_token=page_token)
        response: admin_service_pb2.ListApiKeysResponse = await self._call(
            self._admin.ListApiKeys, request, timeout
        )
        return response

    async def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> admin_service_pb2.ApiKey:
        """Revokes one of the caller's tenant's API keys; every gateway refuses it within seconds."""
        request = admin_service_pb2.RevokeApiKeyRequest(key_id=key_id)
        response: admin_service_pb2.RevokeApiKeyResponse = await self._call(
            self._admin.RevokeApiKey, request, timeout
        )
        return response.api_key

    async def create_collection(
        self, name: str, *, embedding_model: str = "", timeout: float | None = None
    ) -> common_pb2.Collection:
        """Creates an empty collection in the caller's tenant (an admin call); an empty `embedding_model`
        means the embedder's model, the only one the gateway embeds with."""
        request = admin_service_pb2.CreateCollectionRequest(name=name, embedding_model=embedding_model)
        response: admin_service_pb2.CreateCollectionResponse = await self._call(
            self._admin.CreateCollection, request, timeout
        )
        return response.collection

    async def get_collection(self, name: str, *, timeout: float | None = None) -> common_pb2.Collection:
        """Returns one of the caller's tenant's collections with its document and chunk counts."""
        request = admin_service_pb2.GetCollectionRequest(name=name)
        response: admin_service_pb2.GetCollectionResponse = await self._call(
            self._admin.GetCollection, request, timeout
        )
        return response.collection

    async def list_collections(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> admin_service_pb2.ListCollectionsResponse:
        """Returns one page of the caller's tenant's collections, by name; pass `next_page_token` back for the next."""
        request = admin_service_pb2.ListCollectionsRequest(page_size=page_size, page_token=page_token)
        response: admin_service_pb2.ListCollectionsResponse = await self._call(
            self._admin.ListCollections, request, timeout
        )
        return response

    async def migrate_collection(
        self, name: str, embedding_model: str, *, timeout: float | None = None
    ) -> common_pb2.IngestJob:
        """Starts moving one of the caller's tenant's collections to another embedding model while it
        keeps serving; returns the migration's ingest job (follow or cancel it as any job)."""
        request = admin_service_pb2.MigrateCollectionRequest(name=name, embedding_model=embedding_model)
        response: admin_service_pb2.MigrateCollectionResponse = await self._call(
            self._admin.MigrateCollection, request, timeout
        )
        return response.job

    async def delete_collection(self, name: str, *, timeout: float | None = None) -> int:
        """Deletes one of the caller's tenant's collections with all its documents; returns how many there were."""
        request = admin_service_pb2.DeleteCollectionRequest(name=name)
        response: admin_service_pb2.DeleteCollectionResponse = await self._call(
            self._admin.DeleteCollection, request, timeout
        )
        return response.deleted_documents

    async def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any:
        """The reply of a stub method to `request` (a message, or messages for a client stream), within
        `timeout` seconds or the client's default deadline."""
        return await rpc(request, timeout=timeout or self.timeout, metadata=self._metadata)

    async def _job(self, rpc: Any, request: Any, timeout: float | None) -> common_pb2.IngestJob:
        """The job in the reply of one of the ingest job RPCs, which all answer with one."""
        response = await self._call(rpc, request, timeout)
        job: common_pb2.IngestJob = response.job
        return job

    async def wait_for_ingest_job(
        self, job_id: str, *, poll_seconds: float = 0.5, timeout: float | None = None
    ) -> common_pb2.IngestJob:
        """Polls the job until it has finished (succeeded, failed or cancelled) and returns it.

        `timeout` bounds the whole wait (None waits for as long as the job runs).
        """
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.get_ingest_job(job_id)
            if job.state in FINISHED_JOB_STATES:
                return job
            if deadline is not None and asyncio.get_running_loop().time() + poll_seconds > deadline:
                raise TimeoutError(f"ingest job {job_id} did not finish within {timeout} s")
            await asyncio.sleep(poll_seconds)


FINISHED_JOB_STATES = frozenset(
    {
        common_pb2.INGEST_JOB_STATE_SUCCEEDED,
        common_pb2.INGEST_JOB_STATE_FAILED,
        common_pb2.INGEST_JOB_STATE_CANCELLED,
    }
)


def _query(text: str, options: QueryOptions) -> gateway_service_pb2.Query:
    """The Query message that `ask`, `ask_stream` and `search` send, from the text and the keyword arguments."""
    return gateway_service_pb2.Query(text=text, **options)


def _generation(
    max_tokens: int, temperature: float, answer_mode: common_pb2.AnswerMode
) -> common_pb2.GenerationOptions:
    """How `ask` and `ask_stream` want the answer written; zeros leave the servers' defaults."""
    return common_pb2.GenerationOptions(
        max_tokens=max_tokens, temperature=temperature, answer_mode=answer_mode
    )
