"""Extracts the text of each supported document format as sections the chunker keeps apart.

A section is a run of text that shares one piece of metadata: a Markdown or HTML heading
path (`{"headings": ["Install", "Linux"]}`) or a PDF page (`{"page": 3}`). Chunks never
span two sections, so every chunk's metadata is exact and an edit in one section cannot
move the chunk boundaries of another.

Each format is read by a well-kept parser: Markdown structure by `markdown-it-py` (so a
`#` line inside a code fence is not a heading), PDF text by `pypdf`, HTML by the standard
library's tolerant `html.parser`, JSON Lines by the standard `json` module. A parser's
failure is turned into `UnreadableContent` with a reason a person can act on.
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TypeAlias

from markdown_it import MarkdownIt
from pypdf import PasswordType, PdfReader

from ragline.validation import MAX_METADATA_DEPTH

# Metadata values: what JSON (and so a protobuf Struct) can hold.
JsonValue: TypeAlias = str | float | bool | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None


class UnreadableContent(Exception):
    """The content cannot be read as its media type; the message completes "document 'x' ..."."""


@dataclass(frozen=True)
class Section:
    """A run of a document's text that shares one piece of metadata."""

    text: str
    """The section's text, paragraphs separated by blank lines."""
    metadata: Mapping[str, JsonValue] = field(default_factory=dict)
    """Metadata every chunk of the section carries, e.g. `{"page": 3}`."""


@dataclass(frozen=True)
class Record:
    """One record of a JSON Lines file."""

    key: str
    """The record's `id` field, or its line number when it has none."""
    text: str
    """The record's `text` field."""
    metadata: dict[str, JsonValue]
    """Every other field of the record; the fields of a `metadata` object are merged in."""


def decode_text(content: bytes, charset: str | None) -> str:
    """The content as text in `charset` (UTF-8 when None), a leading byte-order mark dropped."""
    if b"\x00" in content:
        raise UnreadableContent("looks binary (it contains NUL bytes); send UTF-8 text")
    encoding = charset or "utf-8"
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        raise UnreadableContent(
            f"is not valid {name} (bad byte at offset {exc.start}); convert it to UTF-8 first"
        ) from None
    return text.removeprefix("\ufeff")


def plain_text(content: bytes, charset: str | None) -> list[Section]:
    """Plain text: one section."""
    return [Section(decode_text(content, charset))]


class _Sections:
    """Collects sections delimited by headings, tracking the heading path.

    Headings are kept on the lines just above the section's first paragraph (not a blank line
    apart), so the chunker keeps a heading with the text it introduces.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._has_body = False

    def heading(self, level: int, title: str, source: str) -> None:
        """Starts a section under heading `title` of `level` (1-6); `source` is its text as written."""
        if self._has_body:
            self._emit()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, title))
        # A heading with no text of its own before the next one stays as the next section's first line.
        self._add(source)

    def body(self, text: str) -> None:
        """Adds text to the current section."""
        if text.strip():
            self._add(text.strip("\n"))
            self._has_body = True

    def finish(self) -> list[Section]:
        """The sections, the last one included."""
        if self._blocks:
            self._emit()
        return self.sections

    def _add(self, text: str) -> None:
        if self._blocks and not self._has_body:
            self._blocks[-1] += "\n" + text
        else:
            self._blocks.append(text)

    def _emit(self) -> None:
        metadata: dict[str, JsonValue] = (
            {"headings": [title for _, title in self._path]} if self._path else {}
        )
        self.sections.append(Section("\n\n".join(self._blocks), metadata))
        self._blocks, self._has_body = [], False


def markdown(content: bytes, charset: str | None) -> list[Section]:
    """Markdown: one section per heading, the source text kept as written."""
    text = decode_text(content, charset)
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    sections = _Sections()
    position = 0
    for i, token in enumerate(tokens):
        # Only top-level headings delimit sections; one inside a list or quote is part of its text.
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        start, end = token.map
        sections.body("\n".join(lines[position:start]))
        inline = tokens[i + 1]
        title = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
        sections.heading(
            int(token.tag[1]), title.strip() or inline.content.strip(), "\n".join(lines[start:end])
        )
        position = end
    sections.body("\n".join(lines[position:]))
    return sections.finish()


# Tags whose content is not document text.
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object"})
# Tags that end the paragraph before them and start a new one.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot",
        "thead", "tr", "ul",
    }
)  # fmt: skip
_WHITESPACE = re.compile(r"\s+")
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


class _HtmlText(HTMLParser):
    """Collects an HTML page's visible text as paragraphs under their heading path."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections = _Sections()
        self._skipping: str | None = None
        self._skip_depth = 0
        self._pre_depth = 0
        self._heading: int | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skipping is not None:
            if tag == self._skipping:
                self._skip_depth += 1
            # `</head>` may be left out; the body starts anyway.
            elif tag == "body" and self._skipping == "head":
                self._skipping = None
            return
        if tag in _SKIPPED_TAGS:
            self._skipping, self._skip_depth = tag, 1
        elif tag in _HEADING_TAGS:
            self._flush()
            self._heading = _HEADING_TAGS[tag]
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._pre_depth += tag == "pre"
        elif tag == "br":
            self._text.append("\n")
        elif tag in ("td", "th"):
            self._text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if self._skipping is not None:
            if tag == self._skipping:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skipping = None
            return
        if tag in _HEADING_TAGS and self._heading is not None:
            title = " ".join("".join(self._text).split())
            self._text = []
            if title:
                self.sections.heading(self._heading, title, title)
            self._heading = None
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre" and self._pre_depth:
                self._pre_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._skipping is None:
            # Outside <pre>, line breaks in the source are spaces; only <br> breaks a line.
            self._text.append(data if self._pre_depth else _WHITESPACE.sub(" ", data))

    def close(self) -> None:
        super().close()
        if self._heading is not None:
            self.handle_endtag(f"h{self._heading}")
        self._flush()

    def _flush(self) -> None:
        if self._heading is not None:
            return
        text = "".join(self._text)
        self._text = []
        if not self._pre_depth:
            text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
        self.sections.body(text)


def html(content: bytes, charset: str | None) -> list[Section]:
    """HTML: the visible text, one section per heading; scripts, styles and the head dropped."""
    if charset is None:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            # Pages saved from the web often declare a legacy charset in a <meta> tag.
            declared = _META_CHARSET.search(content[:2048])
            if declared:
                charset = _known_charset(declared.group(1).decode("ascii"))
    parser = _HtmlText()
    parser.feed(decode_text(content, charset))
    parser.close()
    return parser.sections.finish()


def _known_charset(name: str) -> str | None:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def pdf(content: bytes, charset: str | None) -> list[Section]:
    """PDF: one section per page with text, carrying its 1-based page number."""
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableContent("is an encrypted PDF; remove its password before ingesting it")
        sections = [
            Section(text, {"page": number})
            for number, page in enumerate(reader.pages, start=1)
            if (text := page.extract_text()).strip()
        ]
    except UnreadableContent:
        raise
    except Exception as exc:
        # A damaged file can make the parser fail in many ways; each means this file cannot be read.
        raise UnreadableContent(f"is not a readable PDF ({type(exc).__name__}: {exc})") from None
    if not sections and reader.pages:
        raise UnreadableContent(
            f"is a PDF of {len(reader.pages)} pages with no extractable text (scanned images?); OCR it first"
        )
    return sections


# The deepest a JSON Lines record may nest objects and arrays: the record's fields become its
# metadata, whose limit this is (and which stays far below the 100 nested messages protobuf
# decoders take, three per JSON level).
MAX_JSON_DEPTH = MAX_METADATA_DEPTH
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nested_too_deep(line: str) -> bool:
    """Whether the objects and arrays of a JSON text nest deeper than MAX_JSON_DEPTH, found
    without parsing it: the json module recurses, so a deep enough text exhausts the stack."""
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _JSON_STRING.sub("", line)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def jsonl(content: bytes, charset: str | None) -> list[Record]:
    """JSON Lines: one record per non-blank line, each an object with a non-empty `text` string,
    nesting at most MAX_JSON_DEPTH levels."""
    records: list[Record] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(decode_text(content, charset).splitlines(), start=1):
        if not line.strip():
            continue
        if _nested_too_deep(line):
            raise UnreadableContent(
                f"line {number} nests objects or arrays more than {MAX_JSON_DEPTH} levels deep; flatten it"
            )
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UnreadableContent(
                f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(record, dict):
            raise UnreadableContent(f"line {number} is a JSON {type(record).__name__}, not an object")
        text = record.pop("text", None)
        if not isinstance(text, str) or not text.strip():
            raise UnreadableContent(f'line {number} has no "text" field holding non-empty text')
        key = record.pop("id", number)
        if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip():
            raise UnreadableContent(f'line {number} has an "id" that is not a non-empty string or an integer')
        key = str(key)
        if key in lines:
            raise UnreadableContent(f"line {number} repeats the id {key!r} of line {lines[key]}")
        lines[key] = number
        nested = record.pop("metadata", {})
        if not isinstance(nested, dict):
            raise UnreadableContent(f'line {number} has a "metadata" field that is not an object')
        records.append(Record(key, text, {**record, **nested}))
    return records
