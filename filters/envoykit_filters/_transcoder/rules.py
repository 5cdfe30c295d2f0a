"""The descriptor set: message classes, services, and their ``google.api.http`` rules compiled
into path templates, ready for per-request lookups."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from .template import PathTemplate, TemplateError

__all__ = ["Binding", "DescriptorError", "Method", "Registry", "HTTP_BODY", "registry_for"]

#: The ``google.api.http`` extension of ``MethodOptions``.
_HTTP_OPTION = 72295728
HTTP_BODY = "google.api.HttpBody"


class DescriptorError(ValueError):
    pass


@dataclass(frozen=True)
class Method:
    """One gRPC method: its path, message classes and streaming shape."""

    descriptor: MethodDescriptor
    grpc_path: str
    input_cls: Any
    output_cls: Any
    server_streaming: bool
    client_streaming: bool


@dataclass(frozen=True)
class Binding:
    """One HTTP binding (a rule or an additional binding) of a method."""

    method: Method
    http_method: str
    template: PathTemplate
    #: ``""`` (no body), ``"*"`` (the whole request message) or a field path.
    body: tuple[str, ...] | None
    response_body: tuple[str, ...]


def _field_path(message: Descriptor, path: tuple[str, ...], where: str) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in path:
        field = current.fields_by_name.get(name) if current is not None else None
        if field is None:
            raise DescriptorError(f"{where}: {'.'.join(path)!r} is not a field of {message.full_name}")
        fields.append(field)
        current = field.message_type
    return fields


class Registry:
    """Everything the filter needs from a descriptor set, for the listed services."""

    def __init__(self, descriptor_set: bytes, services: tuple[str, ...]) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self.pool = descriptor_pool.DescriptorPool()
        http_rule: Any = None
        for proto in files.file:
            self.pool.Add(proto)
        #: Every message class of the set, held for the registry's (the process's) life. upb
        #: keeps classes in a weak cache: a sub-message type's class (``Author`` of a ``Book``)
        #: would die with its last instance, be collected by the cyclic GC and be re-created on
        #: the next request. Besides the cost, a collection that releases the GIL midway (it
        #: does when it frees grpc.aio objects) lets another thread find a class in upb's cache
        #: that the collector is freeing: an interpreter crash. Held classes are never garbage.
        self.classes = [
            message_factory.GetMessageClass(d)
            for proto in files.file
            for d in _all_messages(self.pool.FindFileByName(proto.name).message_types_by_name.values())
        ]
        try:
            http_rule = message_factory.GetMessageClass(
                self.pool.FindMessageTypeByName("google.api.HttpRule")
            )
        except KeyError:
            http_rule = None
        self.bindings: list[Binding] = []
        self.methods: dict[str, Method] = {}
        raw_options = {
            f"{p.package}.{s.name}.{m.name}" if p.package else f"{s.name}.{m.name}": m.options
            for p in files.file
            for s in p.service
            for m in s.method
        }
        for name in services:
            try:
                service = self.pool.FindServiceByName(name)
            except KeyError:
                raise DescriptorError(f"service {name!r} is not in the descriptor set") from None
            for md in service.methods:
                method = Method(
                    descriptor=md,
                    grpc_path=f"/{service.full_name}/{md.name}",
                    input_cls=message_factory.GetMessageClass(md.input_type),
                    output_cls=message_factory.GetMessageClass(md.output_type),
                    server_streaming=md.server_streaming,
                    client_streaming=md.client_streaming,
                )
                self.methods[method.grpc_path] = method
                rule = _http_rule(raw_options[md.full_name], http_rule)
                if rule is not None:
                    self._add(method, rule, top=True)

    def message_class(self, full_name: str) -> Any:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def _add(self, method: Method, rule: Any, *, top: bool) -> None:
        where = method.descriptor.full_name
        kind = rule.WhichOneof("pattern")
        if kind is None:
            return
        if kind == "custom":
            verb, template = rule.custom.kind, rule.custom.path
        else:
            verb, template = kind.upper(), getattr(rule, kind)
        try:
            compiled = PathTemplate(template)
        except TemplateError as exc:
            raise DescriptorError(f"{where}: {exc}") from None
        for var in compiled.vars:
            _field_path(method.descriptor.input_type, var.field_path, where)
        body: tuple[str, ...] | None = None
        if rule.body == "*":
            body = ()
        elif rule.body:
            body = tuple(rule.body.split("."))
            _field_path(method.descriptor.input_type, body, where)
        response_body = tuple(rule.response_body.split(".")) if rule.response_body else ()
        if response_body:
            _field_path(method.descriptor.output_type, response_body, where)
        self.bindings.append(Binding(method, verb, compiled, body, response_body))
        if top:
            for extra in rule.additional_bindings:
                self._add(method, extra, top=False)


def _all_messages(messages: Any) -> list[Descriptor]:
    """These message types and all their nested types (map entries included)."""
    out: list[Descriptor] = []
    for d in messages:
        out.append(d)
        out.extend(_all_messages(d.nested_types))
    return out


def _http_rule(options: descriptor_pb2.MethodOptions, http_rule_cls: Any) -> Any:
    """The method's ``google.api.http`` rule (an unknown extension to the stock MethodOptions)."""
    if http_rule_cls is None:
        return None
    unknown: Any = UnknownFieldSet(options)  # iterable; the stubs miss __iter__
    for field in unknown:
        if field.field_number == _HTTP_OPTION:
            return http_rule_cls.FromString(field.data)
    return None


#: Registries by (descriptor set digest, services). Kept for the process's life: a descriptor
#: pool and its message classes are never dropped (upb has crashed collecting them while other
#: threads used protobuf), and a config validated then built loads the set once.
_REGISTRIES: dict[tuple[str, tuple[str, ...]], Registry] = {}
_LOCK = threading.Lock()


def registry_for(descriptor_set: bytes, services: tuple[str, ...]) -> Registry:
    key = (hashlib.sha256(descriptor_set).hexdigest(), services)
    with _LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = _REGISTRIES[key] = Registry(descriptor_set, services)
        return registry
