"""Entry point of the retriever service: `ragline-retriever` or `python -m ragline_retriever`."""

from __future__ import annotations

from ragline.server import Lifecycle, Servicer, run_service
from ragline.v1 import (
    api_key_store_service_pb2,
    api_key_store_service_pb2_grpc,
    conversation_store_service_pb2,
    conversation_store_service_pb2_grpc,
    ingest_queue_service_pb2,
    ingest_queue_service_pb2_grpc,
    retriever_service_pb2,
    retriever_service_pb2_grpc,
)
from ragline_retriever.api_key_store_service import ApiKeyStoreServicer
from ragline_retriever.config import DEFAULT_METRICS_PORT, DEFAULT_PORT, RetrieverConfig
from ragline_retriever.conversation_store_service import ConversationStoreServicer
from ragline_retriever.database import Database
from ragline_retriever.ingest_queue_service import IngestQueueServicer
from ragline_retriever.service import RetrieverServicer


def build(config: RetrieverConfig) -> tuple[Lifecycle, list[Servicer]]:
    """The retriever servicer, the ingest queue, the API key store and the conversation store over one
    PostgreSQL pool."""
    database = Database(config)
    servicer = RetrieverServicer(config, database)
    name = retriever_service_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name
    add = retriever_service_pb2_grpc.add_RetrieverServiceServicer_to_server
    queue_name = ingest_queue_service_pb2.DESCRIPTOR.services_by_name["IngestQueueService"].full_name
    add_queue = ingest_queue_service_pb2_grpc.add_IngestQueueServiceServicer_to_server
    keys_name = api_key_store_service_pb2.DESCRIPTOR.services_by_name["ApiKeyStoreService"].full_name
    add_keys = api_key_store_service_pb2_grpc.add_ApiKeyStoreServiceServicer_to_server
    conversations_name = conversation_store_service_pb2.DESCRIPTOR.services_by_name[
        "ConversationStoreService"
    ].full_name
    add_conversations = conversation_store_service_pb2_grpc.add_ConversationStoreServiceServicer_to_server
    return servicer, [
        Servicer(name, add, servicer),
        Servicer(queue_name, add_queue, IngestQueueServicer(database)),
        Servicer(keys_name, add_keys, ApiKeyStoreServicer(database)),
        Servicer(conversations_name, add_conversations, ConversationStoreServicer(config, database)),
    ]


def main() -> None:
    """Runs the retriever until SIGTERM."""
    run_service("retriever", RetrieverConfig, build, port=DEFAULT_PORT, metrics_port=DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
