"""Document validation: every bad input gets INVALID_ARGUMENT with a message naming the document."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2
from ragline_gateway.documents import check_request, decode_document


def _doc(content: bytes, document_id: str = "a.txt", media_type: str = "") -> common_pb2.DocumentContent:
    return common_pb2.DocumentContent(document_id=document_id, content=content, media_type=media_type)


def test_utf8_text_is_decoded() -> None:
    assert [d.text for d in decode_document(0, _doc("héllo wörld".encode()), 1000)] == ["héllo wörld"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_doc(b""), "'a.txt' is empty"),
        (_doc(b"  \n\t "), "'a.txt' is empty"),
        (_doc(b"\x89PNG\r\n\x1a\n\x00\x00"), "looks binary"),
        (_doc(b"caf\xe9 au lait"), "not valid UTF-8 (bad byte at offset 3)"),
        (_doc(b"x" * 2000), "the limit is 1000"),
        (_doc(b"text", document_id=" "), "document_id is empty"),
        (_doc(b"text", media_type="image/png"), "media type 'image/png'"),
        (_doc(b"text", document_id="a\x00"), "NUL"),
        (_doc(b"text", document_id="x" * 2000), "the limit is 1024"),
        (_doc(b"text", media_type="x" * 5000), "the limit is 1024"),
        (
            common_pb2.DocumentContent(
                document_id="a", content=b"text", metadata=struct_pb2.Struct(fields={"k": struct_pb2.Value()})
            ),
            "no kind set",
        ),
        (_doc(b'{"id": "r", "text": "t", "score": NaN}\n', media_type="application/jsonl"), "finite"),
    ],
)
def test_bad_documents_are_rejected_with_a_clear_message(
    document: common_pb2.DocumentContent, message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode_document(3, document, 1000)
    assert message in raised.value.message
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field is not None and raised.value.field.startswith("documents[3]")


def test_a_long_document_id_is_quoted_in_part() -> None:
    with pytest.raises(InvalidArgument) as raised:
        decode_document(0, _doc(b"text", document_id="x" * 900, media_type="image/png"), 1000)
    assert "characters left out" in raised.value.message
    assert len(raised.value.message) < 400


def test_a_request_over_its_limits_is_invalid() -> None:
    documents = [_doc(b"x" * 10, document_id=str(i)) for i in range(5)]
    check_request(documents, 5, 50)
    with pytest.raises(InvalidArgument, match="GATEWAY_MAX_INGEST_DOCUMENTS"):
        check_request(documents, 4, 50)
    with pytest.raises(InvalidArgument, match="GATEWAY_MAX_REQUEST_BYTES"):
        check_request(documents, None, 49)
