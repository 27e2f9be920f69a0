"""`ragline`, the command line for people: ingest files, follow ingest jobs, ask questions, chat, manage API keys.

It talks to the gateway through `ragline.client.RaglineClient`, the same client library
internal services use, so the command exercises the public API exactly as they do, with the
same credential (`RAGLINE_API_KEY`, else the key `make run` keeps in the state folder). The one
exception is the operator's `ragline keys create --tenant T --retriever HOST:PORT`, which writes a
new tenant's first key straight into the retriever's internal key store.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from ragline import api_keys, chat
from ragline.client import FINISHED_JOB_STATES, DocumentToIngest, RaglineClient, request_id_of
from ragline.v1 import admin_service_pb2, common_pb2

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


def _documents(paths: Sequence[str]) -> Iterator[DocumentToIngest]:
    """The files as documents, read one at a time while the upload streams, so memory stays flat."""
    for path in _files(paths):
        yield DocumentToIngest(
            document_id=_document_id(path),
            content=path.read_bytes(),
            media_type=INGEST_SUFFIXES.get(path.suffix.lower(), "text/plain"),
        )


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _progress(job: common_pb2.IngestJob) -> str:
    """One line: a bar, documents finished of total, documents/s and the time left."""
    finished = job.done_documents + job.skipped_documents + job.failed_documents + job.cancelled_documents
    share = finished / job.total_documents if job.total_documents else 0.0
    bar = "#" * int(share * 30)
    if job.HasField("end_time"):
        left = "finished"
    elif job.HasField("estimated_time_left"):
        left = f"{_duration(job.estimated_time_left.ToTimedelta().total_seconds())} left"
    else:
        left = "? left"
    return f"[{bar:<30}] {finished}/{job.total_documents} documents · {job.documents_per_second:.1f} docs/s · {left}"


def _summary(job: common_pb2.IngestJob) -> str:
    state = common_pb2.IngestJobState.Name(job.state).removeprefix("INGEST_JOB_STATE_").lower()
    line = (
        f"job {job.job_id} {state}: {job.done_documents} stored, {job.skipped_documents} unchanged, "
        f"{job.failed_documents} failed"
    )
    if job.cancelled_documents:
        line += f", {job.cancelled_documents} cancelled"
    if job.status_message:
        line += f" ({job.status_message})"
    if job.HasField("migration"):
        line += f" [migration to {job.migration.target_embedding_model}]"
    return line


def _print_failures(job: common_pb2.IngestJob) -> None:
    for failure in job.failures:
        print(f"  failed: {failure.document_id} after {failure.attempts} attempt(s): {failure.reason}")
    if job.failed_documents > len(job.failures):
        print(f"  ... and {job.failed_documents - len(job.failures)} more")


async def _ingest(args: argparse.Namespace) -> int:
    # The folders are walked once, while the upload streams; the first file is read ahead to know there is one.
    documents = _documents(args.paths)
    first = next(documents, None)
    if first is None:
        print(f"no {', '.join(INGEST_SUFFIXES)} files found", file=sys.stderr)
        return 1
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        job = await client.upload_ingest_documents(
            itertools.chain([first], documents), collection=args.collection
        )
        print(f"job {job.job_id}: {job.total_documents} documents recorded")
        if args.no_wait:
            return 0
        return await _follow(client, job)


async def _follow(client: RaglineClient, job: common_pb2.IngestJob) -> int:
    """Shows the job's progress on a terminal until it finishes, then its summary; the exit status."""
    interactive = sys.stderr.isatty()
    while job.state not in FINISHED_JOB_STATES:
        if interactive:
            print(f"\r{_progress(job)}", end="", file=sys.stderr, flush=True)
        await asyncio.sleep(0.5)
        job = await client.get_ingest_job(job.job_id)
    if interactive:
        print(f"\r{_progress(job)}", file=sys.stderr)
    print(_summary(job))
    _print_failures(job)
    return 0 if job.state == common_pb2.INGEST_JOB_STATE_SUCCEEDED else 1


async def _jobs(args: argparse.Namespace) -> int:
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        if args.job_id:
            call = client.cancel_ingest_job if args.cancel else client.get_ingest_job
            job = await call(args.job_id)
            print(_summary(job))
            print(f"  {_progress(job)}")
            _print_failures(job)
            return 0
        page = await client.list_ingest_jobs(collection=args.collection, page_size=args.limit)
    for job in page.jobs:
        created = job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        print(f"{created}  {job.collection:<20} {_summary(job)}")
    if not page.jobs:
        print("no ingest jobs")
    return 0


async def _ask(args: argparse.Namespace) -> int:
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        # Streamed, so a person sees the answer as it is written.
        reply = await chat.stream_answer(client, args.question, args)
    return 0 if reply is not None else 1


def _print_new_key(key: admin_service_pb2.ApiKey, token: str) -> None:
    # The token alone on stdout, so that `TOKEN=$(ragline keys create ...)` keeps it and nothing else.
    print(
        f"API key {key.key_id} created in tenant {key.tenant!r} with role {api_keys.role_name(key.role)}; "
        "its token follows and is shown only this once:",
        file=sys.stderr,
    )
    print(token)


async def _keys(args: argparse.Namespace) -> int:
    if args.keys_command == "create" and args.tenant:
        # The operator's path: no gateway and no admin key yet, straight into the internal key store.
        key, token = await asyncio.to_thread(
            api_keys.store_new_key,
            args.retriever,
            args.tenant,
            api_keys.role_value(args.role),
            args.name,
            timeout=args.timeout,
        )
        _print_new_key(key, token)
        return 0
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        if args.keys_command == "create":
            created = await client.create_api_key(
                api_keys.role_value(args.role),  # type: ignore[arg-type]
                display_name=args.name,
            )
            _print_new_key(created.api_key, created.token)
        elif args.keys_command == "revoke":
            key = await client.revoke_api_key(args.key_id)
            print(f"API key {key.key_id} revoked at {key.revoke_time.ToDatetime():%Y-%m-%d %H:%M:%S} UTC")
        else:
            token = ""
            while True:
                page = await client.list_api_keys(page_token=token)
                for key in page.api_keys:
                    created_at = key.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
                    state = "revoked" if key.HasField("revoke_time") else "active"
                    print(
                        f"{key.key_id}  {api_keys.role_name(key.role):<6}  {created_at}  {state:<7}  {key.display_name}"
                    )
                token = page.next_page_token
                if not token:
                    break
    return 0


def _collection_line(collection: common_pb2.Collection) -> str:
    return (
        f"{collection.name:<20} {collection.embedding_model:<26} {collection.dimension:>5} dims  "
        f"{collection.document_count:>8} documents  {collection.chunk_count:>9} chunks"
    )


async def _collections(args: argparse.Namespace) -> int:
    async with RaglineClient(args.gateway, timeout=args.timeout) as client:
        if args.collections_command == "show":
            collection = await client.get_collection(args.name)
            created = collection.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            print(f"collection {collection.name}")
            print(f"  embedding model: {collection.embedding_model} ({collection.dimension} dimensions)")
            print(f"  documents: {collection.document_count}, chunks: {collection.chunk_count}")
            print(f"  generation: {collection.generation}, created {created} UTC")
            if collection.migration_job_id:
                job = await client.get_ingest_job(collection.migration_job_id)
                print(
                    f"  moving to {job.migration.target_embedding_model}: {_progress(job)} "
                    f"(job {job.job_id}; searches use {collection.embedding_model} until it switches)"
                )
            return 0
        if args.collections_command == "migrate":
            job = await client.migrate_collection(args.name, args.model)
            print(
                f"job {job.job_id}: moving collection {args.name} from {job.migration.source_embedding_model} "
                f"to {job.migration.target_embedding_model}, {job.total_documents} documents to embed again; "
                f"it keeps serving meanwhile (follow it with `ragline jobs {job.job_id}`, "
                "cancel it with `--cancel` there)"
            )
            return await _follow(client, job) if args.wait else 0
        token, listed = "", 0
        while True:
            page = await client.list_collections(page_token=token)
            for collection in page.collections:
                print(_collection_line(collection))
            listed += len(page.collections)
            token = page.next_page_token
            if not token:
                break
    if not listed:
        print("no collections")
    return 0


def _add_collections_commands(commands: Any) -> None:
    collections = commands.add_parser(
        "collections",
        help="list your tenant's collections, show one with its model and counts, or migrate one to another "
        "embedding model (admin keys)",
    )
    actions = collections.add_subparsers(dest="collections_command", required=True)
    actions.add_parser("list", help="each collection with its embedding model and document and chunk counts")
    show = actions.add_parser("show", help="one collection: embedding model, dimension, counts, generation")
    show.add_argument("name")
    migrate = actions.add_parser(
        "migrate",
        help="move a collection to another embedding model while it keeps serving (a job embeds it again)",
    )
    migrate.add_argument("name")
    migrate.add_argument(
        "--model", required=True, help="the model, which one of the gateway's embedders serves"
    )
    migrate.add_argument(
        "--wait", action="store_true", help="show the progress until the collection has switched"
    )


def _add_keys_commands(commands: Any) -> None:
    keys = commands.add_parser(
        "keys", help="create, list and revoke the API keys of your tenant (admin keys only)"
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create",
        help="create an API key and print its token (shown only once)",
        description="Creates an API key in your tenant through the gateway. Operators on the internal network "
        "make a new tenant's first admin key with --tenant T --retriever HOST:PORT, which writes straight "
        "to the retriever's key store.",
    )
    create.add_argument("--role", required=True, choices=("reader", "writer", "admin"))
    create.add_argument(
        "--name", default="", help="a name for people, e.g. the service that will use the key"
    )
    create.add_argument(
        "--tenant", default="", help="operator only: the tenant of the key (needs --retriever)"
    )
    create.add_argument("--retriever", default="", metavar="HOST:PORT", help="operator only: the retriever")
    actions.add_parser("list", help="list your tenant's API keys, revoked ones included")
    revoke = actions.add_parser("revoke", help="revoke an API key; every gateway refuses it within seconds")
    revoke.add_argument("key_id")


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
    ingest.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the files are recorded, without waiting for the job",
    )
    jobs = commands.add_parser("jobs", help="list ingest jobs, or show (or cancel) one")
    jobs.add_argument("job_id", nargs="?", help="the job to show")
    jobs.add_argument("--cancel", action="store_true", help="cancel the job instead of showing it")
    jobs.add_argument("--limit", type=int, default=20, help="jobs to list, newest first")
    ask = commands.add_parser("ask", help="ask a question and print the answer with its sources")
    ask.add_argument("question")
    ask.add_argument("--top-k", type=int, default=0, help="passages to answer from")
    chat.add_mode_option(ask)
    _add_keys_commands(commands)
    chat.add_commands(commands)
    _add_collections_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "keys" and args.keys_command == "create" and bool(args.tenant) != bool(args.retriever):
        parser.error(
            "--tenant and --retriever go together: an operator writes a tenant's key to the key store"
        )
    # Every path is checked before anything is sent, so a typo never leaves a half-uploaded job.
    missing = [raw for raw in getattr(args, "paths", []) if not Path(raw).exists()]
    if missing:
        raise SystemExit(f"error: {missing[0]}: no such file or folder")
    run = {
        "ingest": _ingest,
        "jobs": _jobs,
        "ask": _ask,
        "keys": _keys,
        "chat": chat.chat,
        "conversations": chat.conversations,
        "collections": _collections,
    }[args.command]
    try:
        code = asyncio.run(run(args))
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        request_id = request_id_of(exc)
        if request_id:
            print(f"request id: {request_id} (quote it when reporting this error)", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
