"""What the crash and replica tests ingest and how they check it: every document stored exactly once, with
exactly its chunks, none missing and none doubled."""

from __future__ import annotations

import hashlib

import grpc

from ragline.client import RaglineClient
from ragline.v1 import retriever_service_pb2, retriever_service_pb2_grpc
from ragline_gateway.chunking import chunk_sections
from ragline_gateway.config import GatewayConfig
from ragline_gateway.formats import Section

TOPICS = ("rivers", "volcanoes", "orchards", "bridges", "comets", "glaciers", "deserts", "harbours")


def note_text(i: int) -> str:
    """Document `i`'s text; every tenth is long enough for several chunks, so a chunk lost or doubled would show."""
    topic = TOPICS[i % len(TOPICS)]
    lines = 60 if i % 10 == 0 else 2
    return " ".join(
        f"Note {i}, line {j}, is about {topic}; its detail {i * 7919 + j} matters." for j in range(lines)
    )


async def all_document_ids(client: RaglineClient, collection: str) -> list[str]:
    """The ids of every document in `collection`, page after page."""
    ids: list[str] = []
    token = ""
    while True:
        page = await client.list_documents(collection=collection, page_size=100, page_token=token)
        ids.extend(d.document_id for d in page.documents)
        token = page.next_page_token
        if not token:
            return ids


async def assert_stored_once(
    client: RaglineClient, retriever_address: str, collection: str, texts: dict[str, str]
) -> None:
    """Asserts that `collection` (of tenant default) holds exactly the documents `texts`, each with exactly
    the chunks the gateway makes of its text, in order."""
    assert sorted(await all_document_ids(client, collection)) == sorted(texts)
    config = GatewayConfig()
    async with grpc.aio.insecure_channel(retriever_address) as channel:
        retriever = retriever_service_pb2_grpc.RetrieverServiceStub(channel)
        for name, text in texts.items():
            expected = [
                hashlib.sha256(c.text.encode()).hexdigest()
                for c in chunk_sections([Section(text)], config.chunk_tokens, config.chunk_overlap_tokens)
            ]
            stored = await retriever.LookupChunkHashes(
                retriever_service_pb2.LookupChunkHashesRequest(
                    tenant="default", collection=collection, document_id=name
                )
            )
            assert list(stored.stored_hashes) == expected, name
