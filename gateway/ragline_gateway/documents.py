"""Turns the bytes of an ingested document into sections of text, or says exactly why it cannot.

Each media type has its extractor in `formats`; this module checks what every document
needs (an id, a known media type, a bounded size), reads it, and names the document and
the field in every error, so a person knows which file to fix. A JSON Lines file expands
into one document per record, with id `<file id>#<record id or line number>`.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf import json_format, struct_pb2

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2
from ragline.validation import MAX_ID_CHARS, check_document_id, check_text, metadata_dict, quote
from ragline_gateway import formats
from ragline_gateway.formats import JsonValue, Section, UnreadableContent

# Media types read into sections, aliases included; "" means plain text.
_SECTION_EXTRACTORS: dict[str, Callable[[bytes, str | None], list[Section]]] = {
    "": formats.plain_text,
    "text/plain": formats.plain_text,
    "text/markdown": formats.markdown,
    "text/x-markdown": formats.markdown,
    "text/html": formats.html,
    "application/xhtml+xml": formats.html,
    "application/pdf": formats.pdf,
}
JSONL_MEDIA_TYPES = frozenset(
    {"application/jsonl", "application/x-ndjson", "application/jsonlines", "application/x-jsonlines"}
)
SUPPORTED_MEDIA_TYPES = ("text/plain", "text/markdown", "text/html", "application/pdf", "application/jsonl")


@dataclass(frozen=True)
class DecodedDocument:
    """A document ready to chunk: its id, metadata and text in sections."""

    document_id: str
    """The id to store the document under."""
    metadata: struct_pb2.Struct
    """The document's metadata."""
    sections: tuple[Section, ...]
    """The document's text, in order, split where its metadata changes (heading, page)."""

    @property
    def text(self) -> str:
        """The document's whole text."""
        return "\n\n".join(s.text for s in self.sections)


def _media_type(raw: str, field: str, name: str) -> tuple[str, str | None]:
    """The media type without parameters, and its `charset` parameter if any."""
    check_text(raw, f"{field}.media_type", MAX_ID_CHARS)
    media_type, *parameters = (part.strip() for part in raw.split(";"))
    media_type = media_type.lower()
    if media_type not in _SECTION_EXTRACTORS and media_type not in JSONL_MEDIA_TYPES:
        raise InvalidArgument(
            f"document {quote(name)} has media type {quote(raw)}; supported: {', '.join(SUPPORTED_MEDIA_TYPES)}",
            field=f"{field}.media_type",
        )
    charset = None
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"')
            try:
                codecs.lookup(charset)
            except LookupError:
                raise InvalidArgument(
                    f"document {quote(name)} has media type {quote(raw)} with an unknown charset {quote(charset)}",
                    field=f"{field}.media_type",
                ) from None
    return media_type, charset


def _check(index: int, document: common_pb2.DocumentContent, max_bytes: int) -> tuple[str, str | None]:
    """The document's media type and charset, after checking its id, media type, metadata and size."""
    field = f"documents[{index}]"
    name = check_document_id(document.document_id, f"{field}.document_id")
    media_type, charset = _media_type(document.media_type, field, name)
    metadata_dict(document.metadata, f"{field}.metadata")
    if len(document.content) > max_bytes:
        raise InvalidArgument(
            f"document {quote(name)} is {len(document.content)} bytes; the limit is {max_bytes} "
            "(GATEWAY_MAX_DOCUMENT_BYTES)",
            field=f"{field}.content",
        )
    return media_type, charset


def job_documents(
    index: int, document: common_pb2.DocumentContent, max_bytes: int
) -> list[common_pb2.DocumentContent]:
    """The documents an ingest job records for `document`: itself, or one per JSON Lines record.

    Only what makes the request wrong (no id, an unknown media type, too many bytes) is
    INVALID_ARGUMENT here; content that cannot be read is recorded as sent and fails as one
    document of the job, with the reason, so the rest of the job goes on.
    """
    media_type, charset = _check(index, document, max_bytes)
    if media_type not in JSONL_MEDIA_TYPES:
        return [document]
    try:
        records = formats.jsonl(document.content, charset)
    except UnreadableContent:
        return [document]
    metadata = json_format.MessageToDict(document.metadata)
    expanded = [
        common_pb2.DocumentContent(
            document_id=f"{document.document_id}#{r.key}",
            content=r.text.encode(),
            media_type="text/plain",
            # The record's fields win over the file's metadata.
            metadata=to_struct({**metadata, **r.metadata}),
        )
        for r in records
    ]
    for d in expanded:
        _check_record(d.document_id, d.metadata, f"documents[{index}]")
    return expanded


def decode_document(
    index: int, document: common_pb2.DocumentContent, max_bytes: int
) -> list[DecodedDocument]:
    """The document's text in sections, one entry per JSON Lines record; INVALID_ARGUMENT if unreadable.

    The error names the document and the problem, and its field is `documents[index]...`.
    """
    field = f"documents[{index}]"
    name = document.document_id
    media_type, charset = _check(index, document, max_bytes)
    content = document.content
    try:
        if media_type in JSONL_MEDIA_TYPES:
            decoded = [
                DecodedDocument(
                    f"{name}#{r.key}",
                    # The record's fields win over the file's metadata.
                    to_struct({**json_format.MessageToDict(document.metadata), **r.metadata}),
                    (Section(r.text),),
                )
                for r in formats.jsonl(content, charset)
            ]
        else:
            sections = _SECTION_EXTRACTORS[media_type](content, charset)
            decoded = [DecodedDocument(name, document.metadata, tuple(s for s in sections if s.text.strip()))]
    except UnreadableContent as exc:
        raise InvalidArgument(f"document {quote(name)} {exc}", field=f"{field}.content") from None
    if not any(d.sections for d in decoded):
        raise InvalidArgument(f"document {quote(name)} is empty", field=f"{field}.content")
    for d in decoded:
        _check_record(d.document_id, d.metadata, field)
    return decoded


def _check_record(document_id: str, metadata: struct_pb2.Struct, field: str) -> None:
    """Checks the id and metadata of a JSON Lines record, which come from the document's content."""
    check_document_id(document_id, f"{field}.content")
    metadata_dict(metadata, f"{field}.content[{quote(document_id)}].metadata")


def check_request(
    documents: Sequence[common_pb2.DocumentContent], max_documents: int | None, max_bytes: int
) -> None:
    """INVALID_ARGUMENT if a request holds more than `max_documents` documents (None: no limit) or more than
    `max_bytes` of content in all."""
    if max_documents is not None:
        check_document_count(len(documents), max_documents)
    total = sum(len(d.content) for d in documents)
    if total > max_bytes:
        raise InvalidArgument(
            f"the documents hold {total} bytes in all; the limit is {max_bytes} (GATEWAY_MAX_REQUEST_BYTES): "
            "send them in several requests",
            field="documents",
        )


def check_document_count(count: int, max_documents: int) -> None:
    """INVALID_ARGUMENT if a synchronous IngestDocuments request holds more than `max_documents` documents."""
    if count > max_documents:
        raise InvalidArgument(
            f"the request holds {count} documents; the limit is {max_documents} "
            "(GATEWAY_MAX_INGEST_DOCUMENTS): send more through an ingest job (CreateIngestJob, "
            "UploadIngestDocuments)",
            field="documents",
        )


def to_struct(metadata: Mapping[str, JsonValue]) -> struct_pb2.Struct:
    """Metadata as the protobuf Struct the retriever stores."""
    struct = struct_pb2.Struct()
    struct.update(metadata)
    return struct


def content_hash(text: str) -> str:
    """SHA-256 hex digest of a document's text."""
    return hashlib.sha256(text.encode()).hexdigest()
