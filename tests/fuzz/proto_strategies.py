"""Hypothesis strategies built from protobuf descriptors, so the fuzz suite follows the protos without edits.

Three kinds of request come out of here, all as serialized bytes ready for the wire:
- `random_message`: every field drawn by its type, adversarial values included (numbers at and past their
  limits, NaN and infinities, NUL, control characters and huge strings, unknown enum numbers,
  `google.protobuf.Struct`/`Value` with NaN, unset kinds and deep nesting, nested messages to a depth limit);
- `mutated_template`: a valid request (built by `template_request` from field names) with one field replaced by
  a random value, so that the fuzzer gets past the first validation and reaches the code behind it;
- `raw_request`: bytes no protobuf library would write: random bytes, invalid UTF-8 in a string field,
  truncated messages, wrong wire types, and nesting past the protobuf recursion limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

FD = FieldDescriptor
MAX_DEPTH = 4
"""Nested messages deeper than this are left unset by `random_message`, to keep examples small."""

INT32_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**15, 10_000, 1_000_000]
INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**32, 2**53 + 1]
UINT32_EDGES = [0, 1, 2**32 - 1, 2**31]
UINT64_EDGES = [0, 1, 2**64 - 1, 2**63]
FLOAT_EDGES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 3.4e38, 1e39]
SPECIAL_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    " ",
    "\t\r\n",
    "\u202e\u200b\ufeff",
    "😀" * 50,
    "x" * 10_000,
    "word " * 20_000,
    "' OR 1=1; --",
    "%s%n{0}",
    "../../etc/passwd",
    "$.a[*]",
    "a.b.c",
]
# Valid UTF-8 only: the protobuf library refuses to serialize surrogates; `raw_request` covers invalid UTF-8.
TEXT = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.text(st.characters(codec="ascii"), max_size=10).map(lambda s: s * 500),
)
BYTES = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00" * 10, b"\xff\xfe\xfd", b"{}" * 5000]))


def _ints(edges: list[int], lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _floats(width: int) -> st.SearchStrategy[float]:
    edges = [f for f in FLOAT_EDGES if width == 64 or not math.isfinite(f) or abs(f) < 3.5e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width))  # type: ignore[arg-type]


SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FD.TYPE_INT32: _ints(INT32_EDGES, -(2**31), 2**31 - 1),
    FD.TYPE_SINT32: _ints(INT32_EDGES, -(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: _ints(INT32_EDGES, -(2**31), 2**31 - 1),
    FD.TYPE_INT64: _ints(INT64_EDGES, -(2**63), 2**63 - 1),
    FD.TYPE_SINT64: _ints(INT64_EDGES, -(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: _ints(INT64_EDGES, -(2**63), 2**63 - 1),
    FD.TYPE_UINT32: _ints(UINT32_EDGES, 0, 2**32 - 1),
    FD.TYPE_FIXED32: _ints(UINT32_EDGES, 0, 2**32 - 1),
    FD.TYPE_UINT64: _ints(UINT64_EDGES, 0, 2**64 - 1),
    FD.TYPE_FIXED64: _ints(UINT64_EDGES, 0, 2**64 - 1),
    FD.TYPE_FLOAT: _floats(32),
    FD.TYPE_DOUBLE: _floats(64),
    FD.TYPE_BOOL: st.booleans(),
    FD.TYPE_STRING: TEXT,
    FD.TYPE_BYTES: BYTES,
}


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)


def _struct_value(depth: int) -> st.SearchStrategy[dict[str, Any] | None]:
    """A `google.protobuf.Value` as a small description: kind and payload (None leaves every kind unset)."""
    leaves = st.one_of(
        st.none(),
        st.builds(lambda f: {"number_value": f}, _floats(64)),
        st.builds(lambda f: {"number_value": f}, st.sampled_from([math.nan, math.inf, -math.inf])),
        st.builds(lambda s: {"string_value": s}, TEXT),
        st.builds(lambda b: {"bool_value": b}, st.booleans()),
        st.just({"null_value": 0}),
        st.just({"deep": 40}),
    )
    if depth <= 0:
        return leaves
    inner = _struct_value(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda v: {"list_value": v}, st.lists(inner, max_size=3)),
        st.builds(lambda v: {"struct_value": v}, st.dictionaries(TEXT, inner, max_size=3)),
    )


def _fill_value(value: Message, spec: dict[str, Any] | None) -> None:
    """Writes a `_struct_value` description into a `google.protobuf.Value` message."""
    if spec is None:
        return
    (kind, payload), *_ = spec.items()
    if kind == "deep":
        for _ in range(payload):  # nested lists: deep, within protobuf's limit (`too_deep` goes past it)
            value = value.list_value.values.add()  # type: ignore[attr-defined]
        value.string_value = "bottom"  # type: ignore[attr-defined]
    elif kind == "list_value":
        value.list_value.SetInParent()  # type: ignore[attr-defined]
        for item in payload:
            _fill_value(value.list_value.values.add(), item)  # type: ignore[attr-defined]
    elif kind == "struct_value":
        value.struct_value.SetInParent()  # type: ignore[attr-defined]
        for key, item in payload.items():
            _fill_value(value.struct_value.fields[key], item)  # type: ignore[attr-defined]
    else:
        setattr(value, kind, payload)


def _well_known(descriptor: Descriptor) -> st.SearchStrategy[Message] | None:
    """Struct and Value get their own strategies: the generic walk would rarely build a meaningful one."""
    cls = message_class(descriptor)
    if descriptor.full_name == "google.protobuf.Value":

        def value(spec: dict[str, Any] | None) -> Message:
            msg = cls()
            _fill_value(msg, spec)
            return msg

        return st.builds(value, _struct_value(2))
    if descriptor.full_name == "google.protobuf.Struct":

        def struct(specs: dict[str, dict[str, Any] | None]) -> Message:
            msg = cls()
            for key, spec in specs.items():
                _fill_value(msg.fields[key], spec)  # type: ignore[attr-defined]
            return msg

        return st.builds(struct, st.dictionaries(TEXT, _struct_value(2), max_size=4))
    return None


def field_value(field: FieldDescriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """One value (not a list) of a field, by its type."""
    if field.type == FD.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    if field.type == FD.TYPE_MESSAGE:
        return random_message(field.message_type, depth + 1)
    return SCALARS[field.type]


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def set_field(msg: Message, field: FieldDescriptor, value: Any) -> None:
    """Sets `field` of `msg` to `value` (a list for repeated fields, a list of entry messages for maps)."""
    if _is_map(field):
        target = getattr(msg, field.name)
        target.clear()
        value_field = field.message_type.fields_by_name["value"]
        for entry in value:
            if value_field.type == FD.TYPE_MESSAGE:
                target[entry.key].CopyFrom(entry.value)
            else:
                target[entry.key] = entry.value
    elif field.is_repeated:
        del getattr(msg, field.name)[:]
        getattr(msg, field.name).extend(value)
    elif field.type == FD.TYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def field_strategy(field: FieldDescriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """The value to give `field` with `set_field`: a bounded list for repeated fields."""
    one = field_value(field, depth)
    if field.is_repeated:
        return st.lists(one, max_size=2 if field.type == FD.TYPE_MESSAGE else 6)
    return one


def random_message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message with a random subset of its fields set to random values (oneofs keep the last one set)."""
    special = _well_known(descriptor)
    if special is not None:
        return special
    cls = message_class(descriptor)
    fields = list(descriptor.fields)
    if depth >= MAX_DEPTH or not fields:
        return st.just(cls())

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for field in draw(st.lists(st.sampled_from(fields), unique_by=lambda f: f.number)):
            set_field(msg, field, draw(field_strategy(field, depth)))
        return msg

    return build()


TemplateValues = Mapping[str, Callable[[FieldDescriptor], Any]]
"""Valid values by field name: each takes the field and returns a value for `set_field`, or None to leave
the field to the defaults (message fields are then filled field by field)."""


def _fits(field: FieldDescriptor, value: Any) -> bool:
    """Whether a template value has the field's kind: a field renamed into a message (say `query` becoming a
    `Query`) then gets its message filled field by field instead of failing."""
    is_message = field.type == FD.TYPE_MESSAGE and not _is_map(field)
    items = value if field.is_repeated else [value]
    return all(isinstance(item, Message) == is_message for item in items)


def template_request(descriptor: Descriptor, values: TemplateValues, depth: int = 0) -> Message:
    """A plausible valid request: fields named in `values` get their value, message fields are filled the same way."""
    msg = message_class(descriptor)()
    if depth > MAX_DEPTH:
        return msg
    for field in descriptor.fields:
        value = values[field.name](field) if field.name in values else None
        if value is not None and _fits(field, value):
            set_field(msg, field, value)
        elif field.type == FD.TYPE_MESSAGE and not _is_map(field) and field.containing_oneof is None:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            sub = template_request(field.message_type, values, depth + 1)
            if sub.ByteSize():
                set_field(msg, field, [sub] if field.is_repeated else sub)
    return msg


MUTATION_DEPTH = 3
"""How many levels down `mutated_template` may pick the field it changes."""


def _field_paths(
    descriptor: Descriptor, prefix: tuple[FieldDescriptor, ...] = ()
) -> list[tuple[FieldDescriptor, ...]]:
    """Every field of the request and of its message fields (the first element of repeated ones), to
    MUTATION_DEPTH levels."""
    paths = []
    for field in descriptor.fields:
        paths.append((*prefix, field))
        nested = field.type == FD.TYPE_MESSAGE and not _is_map(field)
        if (
            nested
            and len(prefix) < MUTATION_DEPTH - 1
            and not field.message_type.full_name.startswith("google.")
        ):
            paths.extend(_field_paths(field.message_type, (*prefix, field)))
    return paths


def mutated_template(template: Message) -> st.SearchStrategy[Message]:
    """`template` with one field (at most MUTATION_DEPTH levels down) replaced by a random value, or cleared."""
    paths = _field_paths(template.DESCRIPTOR)
    if not paths:
        return st.just(template)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = type(template)()
        msg.CopyFrom(template)
        path = draw(st.sampled_from(paths))
        parent = msg
        for field in path[:-1]:
            if field.is_repeated:  # change the first element, adding one if the template has none
                items = getattr(parent, field.name)
                parent = items[0] if len(items) else items.add()
            else:
                parent = getattr(parent, field.name)
        leaf = path[-1]
        if draw(st.integers(0, 9)) == 0:
            parent.ClearField(leaf.name)
        else:
            set_field(parent, leaf, draw(field_strategy(leaf)))
        return msg

    return build()


# Hand-encoded wire format, for the bytes a protobuf library refuses to write.
def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A wire-type-2 field (string, bytes or message) with `payload`."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _recursion_path(descriptor: Descriptor) -> tuple[list[FieldDescriptor], list[FieldDescriptor]] | None:
    """Fields from `descriptor` to a message type that contains itself, and the cycle of fields back to it."""

    def search(desc: Descriptor, path: list[FieldDescriptor], seen: list[str]) -> Any:
        for field in desc.fields:
            if field.type != FD.TYPE_MESSAGE or _is_map(field):
                continue
            target = field.message_type.full_name
            if target in seen:
                start = seen.index(target)
                return path[:start], [*path[start:], field]
            found = search(field.message_type, [*path, field], [*seen, target])
            if found:
                return found
        return None

    return search(descriptor, [], [descriptor.full_name])  # type: ignore[no-any-return]


def too_deep(descriptor: Descriptor, depth: int = 150) -> bytes | None:
    """A request nested `depth` times through a recursive message type (past protobuf's limit of 100)."""
    found = _recursion_path(descriptor)
    if found is None:
        return None
    prefix, cycle = found
    payload = b""
    for _ in range(depth):
        for field in reversed(cycle):
            payload = length_delimited(field.number, payload)
    for field in reversed(prefix):
        payload = length_delimited(field.number, payload)
    return payload


def raw_request(template: Message) -> st.SearchStrategy[bytes]:
    """Bytes that are not a valid serialization of the request, or only barely are."""
    descriptor = template.DESCRIPTOR
    valid = template.SerializeToString()
    strings = [f for f in descriptor.fields if f.type == FD.TYPE_STRING]
    scalars = [f for f in descriptor.fields if f.type not in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_MESSAGE)]
    options: list[st.SearchStrategy[bytes]] = [
        st.binary(max_size=200),
        st.integers(0, max(len(valid) - 1, 0)).map(lambda n: valid[:n]),  # truncated
        st.just(b"\x08" + b"\xff" * 11),  # a varint longer than ten bytes
    ]
    deep = too_deep(descriptor)
    if deep is not None:
        options.append(st.just(valid + deep))
    if strings:
        bad_utf8 = st.sampled_from(
            [b"\xff", b"\xc3\x28", b"abc\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok\x80"]
        )
        options.append(
            st.builds(lambda f, b: valid + length_delimited(f.number, b), st.sampled_from(strings), bad_utf8)
        )
    if scalars:  # a length-delimited payload where a number is expected
        options.append(
            st.sampled_from(scalars).map(lambda f: valid + length_delimited(f.number, b"\x01\x02"))
        )
    return st.one_of(options)
