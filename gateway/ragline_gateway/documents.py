"""Turns the bytes of an ingested document into text, or says exactly why it cannot.

Every document of a request is checked before anything is written, so a bad file fails
the request with INVALID_ARGUMENT and leaves what is stored untouched.
"""

from __future__ import annotations

import hashlib

from ragline.errors import InvalidArgument
from ragline.v1 import gateway_service_pb2

SUPPORTED_MEDIA_TYPES = ("", "text/plain", "text/markdown")


def decode_document(index: int, document: gateway_service_pb2.DocumentContent, max_bytes: int) -> str:
    """The document's text; raises INVALID_ARGUMENT naming the document and the problem."""
    field = f"documents[{index}]"
    name = document.document_id
    if not name.strip():
        raise InvalidArgument(
            f"{field}.document_id is empty; give each document an id, e.g. its path",
            field=f"{field}.document_id",
        )
    if document.media_type not in SUPPORTED_MEDIA_TYPES:
        raise InvalidArgument(
            f"document {name!r} has media type {document.media_type!r}; supported: text/plain, text/markdown",
            field=f"{field}.media_type",
        )
    content = document.content
    if len(content) > max_bytes:
        raise InvalidArgument(
            f"document {name!r} is {len(content)} bytes; the limit is {max_bytes} (GATEWAY_MAX_DOCUMENT_BYTES)",
            field=f"{field}.content",
        )
    if b"\x00" in content:
        raise InvalidArgument(
            f"document {name!r} looks binary (it contains NUL bytes); send UTF-8 text",
            field=f"{field}.content",
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"document {name!r} is not valid UTF-8 (bad byte at offset {exc.start}); convert it to UTF-8 first",
            field=f"{field}.content",
        ) from None
    if not text.strip():
        raise InvalidArgument(f"document {name!r} is empty", field=f"{field}.content")
    return text


def content_hash(text: str) -> str:
    """SHA-256 hex digest of a document's text."""
    return hashlib.sha256(text.encode()).hexdigest()
