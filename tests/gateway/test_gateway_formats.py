"""Document formats: each media type's text and metadata reach the chunks; unreadable files fail clearly."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format

from ragline.errors import InvalidArgument
from ragline.v1 import common_pb2, retriever_service_pb2
from ragline_gateway.chunking import chunk_sections
from ragline_gateway.documents import DecodedDocument, decode_document, to_struct
from ragline_gateway.formats import MAX_JSON_DEPTH, JsonValue


def _decode(
    content: bytes, media_type: str, document_id: str = "doc", metadata: dict[str, JsonValue] | None = None
) -> list[DecodedDocument]:
    document = common_pb2.DocumentContent(
        document_id=document_id, content=content, media_type=media_type, metadata=to_struct(metadata or {})
    )
    return decode_document(2, document, 1_000_000)


def _rejected(content: bytes, media_type: str, document_id: str = "doc") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        _decode(content, media_type, document_id)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return raised.value


def _pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, one page per entry, each line drawn as text in Helvetica."""
    count = len(pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(count)), count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % (5 + 2 * i)
        )
        stream = (
            b"BT /F1 12 Tf 14 TL 72 720 Td " + b" ".join(b"(%s) '" % line.encode() for line in lines) + b" ET"
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_plain_text_is_one_section_without_metadata() -> None:
    [document] = _decode("\ufeffJust some text.\n\nA second paragraph.".encode(), "text/plain")
    assert document.text == "Just some text.\n\nA second paragraph."
    [chunk] = chunk_sections(document.sections, size=100, overlap=10)
    assert chunk.metadata == {}


def test_a_charset_parameter_is_honoured_and_an_unknown_one_refused() -> None:
    [document] = _decode("café crème".encode("latin-1"), "text/plain; charset=ISO-8859-1")
    assert document.text == "café crème"
    assert "unknown charset 'klingon'" in _rejected(b"x", "text/plain; charset=klingon").message


def test_markdown_chunks_carry_their_heading_path() -> None:
    text = (
        "Preamble before any heading.\n\n"
        "# Guide\n\n"
        "## Install\n\nRun the installer.\n\n```sh\n# a comment, not a heading\nmake setup\n```\n\n"
        "### On Linux\n\nUse the package.\n\n"
        "Usage\n-----\n\nCall it.\n"
    )
    [document] = _decode(text.encode(), "text/markdown")
    chunks = chunk_sections(document.sections, size=200, overlap=20)
    paths = [chunk.metadata.get("headings") for chunk in chunks]
    assert paths == [None, ["Guide", "Install"], ["Guide", "Install", "On Linux"], ["Guide", "Usage"]]
    # Headings stay on the lines above the text they introduce, so no chunk is a bare heading.
    assert chunks[1].text.startswith("# Guide\n## Install\nRun the installer.\n\n```sh")
    assert "# a comment, not a heading\nmake setup" in chunks[1].text
    assert "Preamble" not in " ".join(c.text for c in chunks[1:])


def test_html_text_is_extracted_without_scripts_styles_or_head() -> None:
    page = b"""<!doctype html><html><head><title>Page title</title>
    <style>body { color: red }</style><script>var hidden = "<p>script text</p>";</script></head>
    <body><h1>Manual</h1><p>The   first <b>bold</b>
    paragraph.<br>After a break.</p><noscript>Enable JavaScript</noscript>
    <h2>Setup</h2><ul><li>Step one</li><li>Step two</li></ul>
    <table><tr><td>key</td><td>value</td></tr></table>
    <pre>  indented
      code</pre><script>alert("also hidden")</script></body></html>"""
    [document] = _decode(page, "text/html")
    text = document.text
    for hidden in ("color: red", "script text", "also hidden", "Enable JavaScript", "Page title"):
        assert hidden not in text
    assert "The first bold paragraph.\nAfter a break." in text
    assert "Step one\n\nStep two" in text
    assert "key value" in text
    assert "  indented\n      code" in text
    chunks = chunk_sections(document.sections, size=200, overlap=0)
    assert [c.metadata["headings"] for c in chunks] == [["Manual"], ["Manual", "Setup"]]


def test_html_in_a_legacy_charset_is_read_through_its_meta_tag() -> None:
    page = '<html><head><meta charset="windows-1252"></head><body><p>naïve café</p></body></html>'
    [document] = _decode(page.encode("cp1252"), "text/html")
    assert document.text == "naïve café"


def test_pdf_pages_land_in_chunk_metadata() -> None:
    pdf = _pdf([["Apples grow on trees.", "They are red."], [], ["Pears are sweeter."]])
    [document] = _decode(pdf, "application/pdf")
    chunks = chunk_sections(document.sections, size=100, overlap=10)
    assert [(c.metadata, c.text) for c in chunks] == [
        ({"page": 1}, "Apples grow on trees.\nThey are red."),
        ({"page": 3}, "Pears are sweeter."),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"%PDF-1.4\nthis is not really a PDF", "is not a readable PDF"),
        (_pdf([["Cut short."]])[:150], "is not a readable PDF"),
        (b"just text", "is not a readable PDF"),
        (_pdf([[], []]), "is a PDF of 2 pages with no extractable text"),
        # pypdf recurses into nested arrays: the RecursionError is one more way a file is unreadable.
        (_pdf([["Deep."]]).replace(b"BT /F1", b"[" * 100_000 + b" BT /F1"), "is not a readable PDF"),
    ],
)
def test_an_unreadable_pdf_fails_naming_the_document(content: bytes, message: str) -> None:
    error = _rejected(content, "application/pdf", document_id="reports/q3.pdf")
    assert error.message.startswith("document 'reports/q3.pdf' ")
    assert message in error.message
    assert error.field == "documents[2].content"


def test_jsonl_records_become_documents_with_their_metadata() -> None:
    lines = [
        json.dumps({"id": "a1", "text": "First record.", "year": 2020, "metadata": {"lang": "en"}}),
        "",
        json.dumps({"text": "Second record, no id.", "source": "override"}),
    ]
    documents = _decode("\n".join(lines).encode(), "application/jsonl", "data.jsonl", {"source": "crawl"})
    assert [d.document_id for d in documents] == ["data.jsonl#a1", "data.jsonl#3"]
    assert [d.text for d in documents] == ["First record.", "Second record, no id."]
    metadata = [json_format.MessageToDict(d.metadata) for d in documents]
    assert metadata == [
        {"source": "crawl", "year": 2020, "lang": "en"},
        {"source": "override"},
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "ok"}\n{"text": broken}', "line 2 is not valid JSON"),
        (b'["text"]', "line 1 is a JSON list, not an object"),
        (b'{"title": "no text"}', 'line 1 has no "text" field'),
        (b'{"text": "   "}', 'line 1 has no "text" field'),
        (b'{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}', "line 2 repeats the id '1' of line 1"),
        (b'{"id": true, "text": "a"}', 'line 1 has an "id" that is not'),
        (b'{"text": "a", "metadata": [1]}', 'line 1 has a "metadata" field that is not an object'),
        (
            b'{"text": "a"}\n{"text": "b", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            f"line 2 nests objects or arrays more than {MAX_JSON_DEPTH} levels deep; flatten it",
        ),
        (b'{"text": "a", "deep": ' + b'{"a": ' * 20 + b"1" + b"}" * 20 + b"}", "line 1 nests objects"),
        (b"\n\n", "is empty"),
    ],
)
def test_a_bad_jsonl_file_fails_naming_the_document_and_line(content: bytes, message: str) -> None:
    error = _rejected(content, "application/x-ndjson", document_id="data.jsonl")
    assert error.message.startswith("document 'data.jsonl' ")
    assert message in error.message


def test_a_jsonl_record_nested_as_deep_as_allowed_survives_the_trip_to_the_retriever() -> None:
    deep: JsonValue = "bottom"
    for _ in range(MAX_JSON_DEPTH - 1):  # objects: the deepest a Struct gets per level
        deep = {"x": deep}
    # Brackets inside strings are text, not nesting.
    deepest = {"text": '[[[[ {{{{ \\" [[[[', "deep": deep}
    [document] = _decode(json.dumps(deepest).encode(), "application/jsonl", "data.jsonl")
    # Metadata travels as a protobuf Struct inside the retriever's batch, whose decoder has a depth limit.
    batch = retriever_service_pb2.BatchUpsertDocumentsRequest(
        requests=[retriever_service_pb2.UpsertDocumentRequest(metadata=document.metadata)]
    )
    decoded = retriever_service_pb2.BatchUpsertDocumentsRequest.FromString(batch.SerializeToString())
    assert json_format.MessageToDict(decoded.requests[0].metadata) == {"deep": deepest["deep"]}


def test_deeply_nested_markdown_and_html_are_read_without_recursion() -> None:
    [quoted] = _decode(b"> " * 100_000 + b"deep quote", "text/markdown")
    assert quoted.text.endswith("deep quote")
    [divided] = _decode(b"<div>" * 100_000 + b"deep div", "text/html")
    assert divided.text == "deep div"


def test_an_unsupported_media_type_lists_the_supported_ones() -> None:
    error = _rejected(b"x", "image/png")
    assert "text/plain, text/markdown, text/html, application/pdf, application/jsonl" in error.message
    assert error.field == "documents[2].media_type"
