"""``google.protobuf.Struct`` to and from plain Python values.

Envoy carries attributes and dynamic metadata as ``Struct``. ``json_format.MessageToDict``
goes through JSON-shaped intermediate objects and reflection; these walk the ``Value`` oneof
directly, which is several times faster on the per-request path of both ext_proc and ext_authz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2

__all__ = ["struct_to_dict", "value_to_python", "dict_to_struct", "metadata_to_struct"]


def value_to_python(value: struct_pb2.Value) -> Any:
    """One ``Value`` as ``None``/``float``/``str``/``bool``/``dict``/``list``."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {key: value_to_python(item) for key, item in struct.fields.items()}


def dict_to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    """A ``Struct`` from JSON-like values (the metadata layer already checked them)."""
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def metadata_to_struct(namespaces: Mapping[str, Mapping[str, Any]]) -> struct_pb2.Struct:
    """Dynamic metadata for Envoy: top-level keys are namespaces, values their contents."""
    struct = struct_pb2.Struct()
    for namespace, values in namespaces.items():
        target = struct.fields[namespace].struct_value
        target.SetInParent()  # an emptied namespace is still sent, as {}
        target.update(values)
    return struct
