"""Conversations: an Ask or AskStream that names a `conversation_id` continues it, and the public
List/Get/DeleteConversation RPCs.

Before retrieval the conversation's latest turns are read from the retriever's conversation store
(stage `conversation`) and the generator makes the question standalone (stage `rewrite`); the
query runs with the standalone question as its text, so retrieval and every cache key on it (two
conversations' identical "how tall is it?" are two different questions), and the turns go into the
prompt. The question, its standalone form and the answer are stored as the next turn before the
final answer is sent, so a caller's next question always sees it. A conversation belongs to the
caller's tenant; another tenant's is NOT_FOUND, as if it did not exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc

from ragline.channels import downstream_timeout
from ragline.errors import ServiceError
from ragline.v1 import (
    common_pb2,
    conversation_pb2,
    conversation_store_service_pb2,
    gateway_service_pb2,
    generator_service_pb2,
)
from ragline.validation import check_conversation_id
from ragline_gateway.config import GatewayConfig
from ragline_gateway.dependencies import Dependencies, call
from ragline_gateway.pipeline import QueryPipeline
from ragline_gateway.query import Query
from ragline_gateway.timings import Timings


class Conversations:
    """Runs the Asks that continue a conversation, and serves the conversation RPCs, for one gateway."""

    def __init__(self, config: GatewayConfig, deps: Dependencies, pipeline: QueryPipeline) -> None:
        self.config = config
        self.deps = deps
        self.pipeline = pipeline

    async def ask_events(
        self,
        query: Query,
        conversation_id: str,
        options: common_pb2.GenerationOptions,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gateway_service_pb2.AskStreamResponse]:
        """The events of an answer, as `QueryPipeline.ask_events`; with a `conversation_id`, the question is
        made standalone from the conversation's turns first and stored as its next turn before the final event."""
        if not conversation_id:
            async for event in self.pipeline.ask_events(query, options, context):
                yield event
            return
        check_conversation_id(conversation_id, "conversation_id")
        timings = Timings()
        async with timings.stage("conversation"):
            history = await self._history(query.tenant, conversation_id, context)
        async with timings.stage("rewrite"):
            rewritten = await self._rewrite(query.text, history, context)
        standalone = dataclasses.replace(query, text=rewritten.standalone_question)
        async for event in self.pipeline.ask_events(standalone, options, context, history, timings):
            if event.HasField("final"):
                await self._store(query, rewritten, event.final, conversation_id, context)
            yield event

    async def _history(
        self, tenant: str, conversation_id: str, context: grpc.aio.ServicerContext
    ) -> list[conversation_pb2.Turn]:
        """The conversation's latest turns, oldest first; none when it does not exist (yet, or any more)."""
        request = conversation_store_service_pb2.GetStoredConversationRequest(
            tenant=tenant, conversation_id=conversation_id, last_turns=self.config.conversation_history_turns
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        try:
            reply = await call(
                "retriever", self.deps.conversations.GetStoredConversation(request, timeout=timeout)
            )
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return []
        return list(reply.turns)

    async def _rewrite(
        self, question: str, history: list[conversation_pb2.Turn], context: grpc.aio.ServicerContext
    ) -> generator_service_pb2.RewriteQuestionResponse:
        """The question as a standalone one: itself at a conversation's first turn, else the generator's rewrite."""
        if not history:
            return generator_service_pb2.RewriteQuestionResponse(
                standalone_question=question, method=conversation_pb2.REWRITE_METHOD_NONE
            )
        request = generator_service_pb2.RewriteQuestionRequest(question=question, history=history)
        timeout = downstream_timeout(context, self.config.generate_timeout_seconds)
        return await call("generator", self.deps.generator.RewriteQuestion(request, timeout=timeout))

    async def _store(
        self,
        query: Query,
        rewritten: generator_service_pb2.RewriteQuestionResponse,
        answer: gateway_service_pb2.AskResponse,
        conversation_id: str,
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Stores the question and its answer as the conversation's next turn."""
        cited = list(dict.fromkeys(citation.document_id for citation in answer.citations))
        turn = conversation_pb2.Turn(
            question=query.text,
            standalone_question=rewritten.standalone_question,
            rewrite_method=rewritten.method,
            answer=answer.answer,
            collection=query.collection,
            cited_document_ids=cited,
        )
        request = conversation_store_service_pb2.AppendStoredTurnRequest(
            tenant=query.tenant, conversation_id=conversation_id, turn=turn
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        await call("retriever", self.deps.conversations.AppendStoredTurn(request, timeout=timeout))

    async def list(
        self,
        tenant: str,
        request: conversation_pb2.ListConversationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> conversation_pb2.ListConversationsResponse:
        """A page of the tenant's conversations, most recently updated first."""
        forwarded = conversation_store_service_pb2.ListStoredConversationsRequest(
            tenant=tenant, page_size=request.page_size, page_token=request.page_token
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call(
            "retriever", self.deps.conversations.ListStoredConversations(forwarded, timeout=timeout)
        )
        return conversation_pb2.ListConversationsResponse(
            conversations=reply.conversations, next_page_token=reply.next_page_token
        )

    async def get(
        self, tenant: str, request: conversation_pb2.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> conversation_pb2.GetConversationResponse:
        """The tenant's conversation with every turn."""
        forwarded = conversation_store_service_pb2.GetStoredConversationRequest(
            tenant=tenant, conversation_id=check_conversation_id(request.conversation_id, "conversation_id")
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call(
            "retriever", self.deps.conversations.GetStoredConversation(forwarded, timeout=timeout)
        )
        return conversation_pb2.GetConversationResponse(conversation=reply.conversation, turns=reply.turns)

    async def delete(
        self,
        tenant: str,
        request: conversation_pb2.DeleteConversationRequest,
        context: grpc.aio.ServicerContext,
    ) -> conversation_pb2.DeleteConversationResponse:
        """Deletes the tenant's conversation and its turns."""
        forwarded = conversation_store_service_pb2.DeleteStoredConversationRequest(
            tenant=tenant, conversation_id=check_conversation_id(request.conversation_id, "conversation_id")
        )
        timeout = downstream_timeout(context, self.config.retrieve_timeout_seconds)
        reply = await call(
            "retriever", self.deps.conversations.DeleteStoredConversation(forwarded, timeout=timeout)
        )
        return conversation_pb2.DeleteConversationResponse(deleted_turns=reply.deleted_turns)
