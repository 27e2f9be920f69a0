"""`ragline`, the command line for people: ingest files and ask questions.

It talks to the gateway through `ragline.client.RaglineClient`, the same client library
internal services use, so the command exercises the public API exactly as they do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from ragline.client import DocumentToIngest, RaglineClient

# The media type each file suffix is sent as; a folder is walked for these suffixes only.
INGEST_SUFFIXES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".pdf": "application/pdf",
    ".jsonl": "application/jsonl",
    ".ndjson": "application/jsonl",
}
# Files are sent in requests of at most this many documents and bytes, well under gRPC's message limit.
BATCH_DOCUMENTS = 32
BATCH_BYTES = 8 * 1024 * 1024


def _files(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INGEST_SUFFIXES
            )
        elif path.is_file():
            yield path
        else:
            raise SystemExit(f"error: {raw}: no such file or folder")


def _document_id(path: Path) -> str:
    """The path relative to the working directory when it is below it, so citations read naturally."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _batches(paths: Sequence[str]) -> Iterator[list[DocumentToIngest]]:
    batch: list[DocumentToIngest] = []
    size = 0
    for path in _files(paths):
        content = path.read_bytes()
        document = DocumentToIngest(
            document_id=_document_id(path),
            content=content,
            media_type=INGEST_SUFFIXES.get(path.suffix.lower(), "text/plain"),
        )
        if batch and (len(batch) >= BATCH_DOCUMENTS or size + len(content) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += len(content)
    if batch:
        yield batch


async def _ingest(args: argparse.Namespace) -> int:
    total = 0
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        for batch in _batches(args.paths):
            reply = await client.ingest(batch, collection=args.collection)
            for result in reply.results:
                total += 1
                print(
                    f"{result.document_id}: {result.chunk_count} chunks "
                    f"({result.inserted_chunks} new, {result.updated_chunks} updated, "
                    f"{result.unchanged_chunks} unchanged, {result.deleted_chunks} removed)"
                )
    if total == 0:
        print(f"no {', '.join(INGEST_SUFFIXES)} files found", file=sys.stderr)
        return 1
    print(f"ingested {total} documents")
    return 0


async def _ask(args: argparse.Namespace) -> int:
    reply = None
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        # Streamed, so a person sees the answer as it is written.
        async for event in client.ask_stream(args.question, collection=args.collection, top_k=args.top_k):
            if event.HasField("delta"):
                print(event.delta, end="", flush=True)
            elif event.HasField("final"):
                reply = event.final
    print()
    if reply is None:
        print("error: the answer stream ended early", file=sys.stderr)
        return 1
    if reply.citations:
        print("\nSources:")
        for citation in reply.citations:
            snippet = " ".join(citation.snippet.split())[:100]
            print(f"  [{citation.number}] {citation.document_id} (chunk {citation.chunk_id}): {snippet}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Parses the command line and runs the command."""
    parser = argparse.ArgumentParser(
        prog="ragline", description="Ingest documents into Ragline and ask questions."
    )
    parser.add_argument(
        "--gateway",
        default=None,
        help="gateway host:port (default: $RAGLINE_GATEWAY_ADDR or 127.0.0.1:50051)",
    )
    parser.add_argument("--collection", default="", help="collection name (default: the gateway's default)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each call")
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser(
        "ingest", help="ingest text, Markdown, HTML, PDF and JSON Lines files and folders"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ask = commands.add_parser("ask", help="ask a question and print the answer with its sources")
    ask.add_argument("question")
    ask.add_argument("--top-k", type=int, default=0, help="passages to answer from")
    args = parser.parse_args(argv)
    run = _ingest if args.command == "ingest" else _ask
    try:
        code = asyncio.run(run(args))
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
