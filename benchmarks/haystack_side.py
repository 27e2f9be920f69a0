"""The Haystack half of `make bench-haystack`: a Haystack hybrid pipeline in one process, timed per query.

Runs in its own virtual environment (.venv-haystack, made by `make bench-haystack`), because
Haystack is no dependency of Ragline's and must not change the versions Ragline pins. It reads
the documents to index from a JSON-lines file (the same texts Ragline ingested), embeds them
with the same model directory Ragline's embedder loads, and then answers one query per line of
standard input with one line of JSON: the pipeline's seconds and the top 10 document ids.

The pipeline is Haystack's documented hybrid retrieval: a SentenceTransformersTextEmbedder
(sentence-transformers-haystack, where Haystack 3 keeps it) into an InMemoryEmbeddingRetriever,
beside an InMemoryBM25Retriever, joined by reciprocal rank fusion (DocumentJoiner), with as
many candidates per side as Ragline's hybrid search takes.

Usage: haystack_side.py DOCUMENTS_JSONL MODEL_DIR CANDIDATES
"""

from __future__ import annotations

import json
import sys
import time

from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever, InMemoryEmbeddingRetriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.embedders.sentence_transformers import (
    SentenceTransformersDocumentEmbedder,
    SentenceTransformersTextEmbedder,
)


def build(documents_path: str, model_dir: str, candidates: int) -> Pipeline:
    """The hybrid pipeline over the documents of `documents_path`, embedded with `model_dir`'s model."""
    with open(documents_path, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    documents = [Document(id=row["id"], content=row["text"]) for row in rows]
    embedder = SentenceTransformersDocumentEmbedder(model=model_dir, device=None, progress_bar=False)
    embedder.warm_up()
    store = InMemoryDocumentStore()
    store.write_documents(embedder.run(documents=documents)["documents"])
    pipeline = Pipeline()
    pipeline.add_component(
        "text_embedder", SentenceTransformersTextEmbedder(model=model_dir, progress_bar=False)
    )
    pipeline.add_component("embedding_retriever", InMemoryEmbeddingRetriever(store, top_k=candidates))
    pipeline.add_component("bm25_retriever", InMemoryBM25Retriever(store, top_k=candidates))
    pipeline.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=10))
    pipeline.connect("text_embedder.embedding", "embedding_retriever.query_embedding")
    pipeline.connect("bm25_retriever", "joiner")
    pipeline.connect("embedding_retriever", "joiner")
    pipeline.warm_up()
    return pipeline


def main() -> None:
    """Indexes, says `ready`, then times each query read from standard input."""
    documents_path, model_dir, candidates = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pipeline = build(documents_path, model_dir, candidates)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        query = json.loads(line)["query"]
        started = time.perf_counter()
        result = pipeline.run({"text_embedder": {"text": query}, "bm25_retriever": {"query": query}})
        seconds = time.perf_counter() - started
        ids = [document.id for document in result["joiner"]["documents"]]
        print(json.dumps({"seconds": seconds, "ids": ids}), flush=True)


if __name__ == "__main__":
    main()
