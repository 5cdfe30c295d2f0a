"""JSON <-> protobuf <-> gRPC frames, with the proto3 JSON mapping options of Envoy's native
transcoder, and gRPC status -> HTTP status."""

from __future__ import annotations

import base64
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from .rules import HTTP_BODY

__all__ = [
    "PrintSettings",
    "RequestError",
    "NoMatch",
    "frame",
    "unframe",
    "http_status",
    "bindings_to_dict",
    "parse_query",
    "to_json",
    "set_path",
]

_HTTP_STATUS = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
_TYPE_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "TYPE_DOUBLE", FieldDescriptor.TYPE_FLOAT: "TYPE_FLOAT",
    FieldDescriptor.TYPE_INT64: "TYPE_INT64", FieldDescriptor.TYPE_UINT64: "TYPE_UINT64",
    FieldDescriptor.TYPE_INT32: "TYPE_INT32", FieldDescriptor.TYPE_FIXED64: "TYPE_FIXED64",
    FieldDescriptor.TYPE_FIXED32: "TYPE_FIXED32", FieldDescriptor.TYPE_BOOL: "TYPE_BOOL",
    FieldDescriptor.TYPE_STRING: "TYPE_STRING", FieldDescriptor.TYPE_BYTES: "TYPE_BYTES",
    FieldDescriptor.TYPE_UINT32: "TYPE_UINT32", FieldDescriptor.TYPE_SFIXED32: "TYPE_SFIXED32",
    FieldDescriptor.TYPE_SFIXED64: "TYPE_SFIXED64", FieldDescriptor.TYPE_SINT32: "TYPE_SINT32",
    FieldDescriptor.TYPE_SINT64: "TYPE_SINT64",
}  # fmt: skip
_INTS = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
}  # fmt: skip
_WRAPPERS = {
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
}  # fmt: skip
_SCALAR_WKT = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}


_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_INT = re.compile(r"[+-]?[0-9]+")


class RequestError(Exception):
    """The request cannot be transcoded: the client gets a 400 with this message."""


class NoMatch(Exception):
    """The request is not for the transcoder (e.g. an unknown query parameter): pass through."""


@dataclass(frozen=True)
class PrintSettings:
    whitespace: bool
    primitives: bool
    enums_as_ints: bool
    proto_names: bool


def http_status(grpc_status: int) -> int:
    return _HTTP_STATUS.get(grpc_status, 500)


def frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def unframe(data: bytes) -> list[bytes]:
    """The messages of a gRPC body; raises ValueError on a truncated or compressed frame."""
    out, i = [], 0
    while i < len(data):
        if len(data) - i < 5:
            raise ValueError("truncated gRPC frame header")
        flag, length = data[i], struct.unpack(">I", data[i + 1 : i + 5])[0]
        if flag != 0:
            raise ValueError("compressed gRPC frames are not supported")
        if len(data) - i - 5 < length:
            raise ValueError("truncated gRPC frame")
        out.append(data[i + 5 : i + 5 + length])
        i += 5 + length
    return out


def _leaf(message: Descriptor, path: tuple[str, ...]) -> FieldDescriptor | None:
    current: Descriptor | None = message
    field: FieldDescriptor | None = None
    for name in path:
        if current is None:
            return None
        field = current.fields_by_name.get(name) or next(
            (f for f in current.fields if f.json_name == name), None
        )
        if field is None:
            return None
        if field.message_type is not None and field.message_type.full_name in _WRAPPERS | _SCALAR_WKT:
            current = None  # a wrapper or scalar well-known type is a leaf
        else:
            current = field.message_type
    return field


def _scalar(field: FieldDescriptor, value: str, where: str) -> Any:
    """A query or path value converted for ``json_format`` (which wants JSON types)."""
    msg = field.message_type
    kind = field.type
    if msg is not None:
        if msg.full_name in _SCALAR_WKT:
            return value
        kind = msg.fields_by_name["value"].type
    if kind == FieldDescriptor.TYPE_STRING:
        return value
    if kind == FieldDescriptor.TYPE_BYTES:
        return value  # base64, as in JSON
    if kind == FieldDescriptor.TYPE_BOOL:  # the words the native filter accepts
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    elif kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        if value in enum.values_by_name:
            return value
        if value.lstrip("-").isdigit():
            return int(value)
        raise RequestError(f'{where}: invalid value "{value}" for type type.googleapis.com/{enum.full_name}')
    elif kind in _INTS:  # a sign is allowed, spaces are not (as natively)
        if _INT.fullmatch(value):
            return int(value)
    elif value == value.strip():  # float, double
        try:
            return float(value)
        except ValueError:
            pass
    raise RequestError(f'{where}: invalid value "{value}" for type {_TYPE_NAMES.get(kind, "TYPE_MESSAGE")}')


def set_path(root: dict[str, Any], message: Descriptor, path: tuple[str, ...], values: list[str]) -> None:
    """Put ``values`` (one, or several for a repeated field) at ``path`` in a JSON-shaped dict."""
    where = ".".join(path)
    field = _leaf(message, path)
    if field is None:
        raise NoMatch(where)
    if field.message_type is not None and field.message_type.full_name not in _WRAPPERS | _SCALAR_WKT:
        raise RequestError(f"{where}: a message field cannot be set from a parameter")
    node = root
    for name in path[:-1]:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    if field.is_repeated:
        node[path[-1]] = [_scalar(field, v, where) for v in values]
    else:
        node[path[-1]] = _scalar(field, values[-1], where)


def parse_query(query: str, *, unescape_plus: bool) -> list[tuple[str, str]]:
    out = []
    for part in query.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            continue  # a parameter without a value sets nothing, as natively
        # Names stay as sent (the native filter does not decode them); values are decoded.
        out.append((key, unquote_plus(value) if unescape_plus else unquote(value)))
    return out


def bindings_to_dict(
    message: Descriptor,
    path_values: dict[tuple[str, ...], str],
    query: Iterable[tuple[str, str]],
    *,
    skip: frozenset[str],
    ignore_unknown: bool,
) -> dict[str, Any]:
    """Path variables, then query parameters (which win), as a JSON-shaped dict. A query
    parameter naming no field makes it no match (``NoMatch``) before any value is checked."""
    grouped: dict[tuple[str, ...], list[str]] = {}
    for key, value in query:
        if key in skip:
            continue
        path = tuple(key.split("."))  # body fields too: the body, merged later, wins
        if _leaf(message, path) is None:
            if not ignore_unknown:
                raise NoMatch(key)
            continue
        grouped.setdefault(path, []).append(value)
    root: dict[str, Any] = {}
    for path, value in path_values.items():
        set_path(root, message, path, [value])
    for path, values in grouped.items():
        set_path(root, message, path, values)
    return root


#: Well-known types whose JSON is not an object of their fields: kept as they are.
_OPAQUE_JSON = _WRAPPERS | _SCALAR_WKT | {
    "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any",
    "google.protobuf.Empty",
}  # fmt: skip


def prepare(value: Any, message: Descriptor, *, drop_unknown: bool) -> Any:
    """``value`` (JSON for ``message``) as the native parser reads it: ``null`` items of
    repeated fields skipped and, with ``drop_unknown``, fields ``message`` lacks removed, so
    the parser stays strict about everything else (an unknown enum name is still an error)."""
    if not isinstance(value, dict) or message.full_name in _OPAQUE_JSON:
        return value
    out = {}
    for key, item in value.items():
        field = message.fields_by_name.get(key) or next(
            (f for f in message.fields if f.json_name == key), None
        )
        if field is None:
            if not drop_unknown:
                out[key] = item
            continue
        sub = field.message_type
        if field.is_repeated and isinstance(item, list):
            item = [v for v in item if v is not None]
            if sub is not None:
                item = [prepare(v, sub, drop_unknown=drop_unknown) for v in item]
        elif sub is not None and item is not None:
            if sub.GetOptions().map_entry:
                value_field = sub.fields_by_name["value"]
                if value_field.message_type is not None and isinstance(item, dict):
                    inner = value_field.message_type
                    item = {k: prepare(v, inner, drop_unknown=drop_unknown) for k, v in item.items()}
            else:
                item = prepare(item, sub, drop_unknown=drop_unknown)
        out[key] = item
    return out


def to_json(message: Any, settings: PrintSettings, pool: Any = None) -> str:
    """``message`` as JSON; ``pool`` resolves the types of ``Any`` fields."""
    value = json_format.MessageToDict(
        message,
        preserving_proto_field_name=settings.proto_names,
        always_print_fields_with_no_presence=settings.primitives,
        use_integers_for_enums=settings.enums_as_ints,
        descriptor_pool=pool,
    )
    if settings.whitespace:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_message(cls: Any, payload: bytes) -> Any:
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        raise ValueError(f"bad response message: {exc}") from None


def is_http_body(message: Descriptor | None) -> bool:
    return message is not None and message.full_name == HTTP_BODY


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
