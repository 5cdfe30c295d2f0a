"""``grpc-json-transcoder``: Envoy's ``grpc_json_transcoder`` as an ext_proc filter.

HTTP/JSON requests that match a ``google.api.http`` rule of the configured services are turned
into gRPC calls (path ``/pkg.Service/Method``, POST, ``application/grpc``, one framed message);
the gRPC response comes back as JSON (a JSON array or newline-delimited JSON for server
streaming, the raw data for ``google.api.HttpBody``), and a gRPC error becomes the mapped HTTP
status, optionally with a ``google.rpc.Status`` JSON body (``convert_grpc_status``). A request
that matches no rule passes through untouched. Option names follow the native filter's, so a
team pastes its config. Put filters before it in the chain to see (and change) the JSON
request, after it to see the gRPC request; the reverse for responses.

Sidecar-only: it needs protobuf's runtime. Bodies are buffered.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from pydantic import Field, model_validator

from envoykit import FilterConfig, Headers, HttpFilter, Reply, Request, Response

from ._transcoder.codec import (
    NoMatch,
    PrintSettings,
    RequestError,
    bindings_to_dict,
    frame,
    http_status,
    is_http_body,
    parse_query,
    prepare,
    to_json,
    unframe,
)
from ._transcoder.rules import Binding, DescriptorError, Registry, registry_for
from ._transcoder.template import split_path

__all__ = ["GrpcJsonTranscoder", "TranscoderConfig", "TranscoderPrintOptions"]

log = logging.getLogger("envoykit.filters.grpc_json_transcoder")


class TranscoderPrintOptions(FilterConfig):
    """The native filter's ``print_options``."""

    add_whitespace: bool = False
    always_print_primitive_fields: bool = False
    always_print_enums_as_ints: bool = False
    preserve_proto_field_names: bool = False
    #: Server streaming as newline-delimited JSON instead of one JSON array.
    stream_newline_delimited: bool = False


class TranscoderConfig(FilterConfig):
    #: A descriptor set file (``protoc --include_imports --descriptor_set_out=...``).
    proto_descriptor: str = Field(min_length=1)
    #: Fully qualified services to expose (``pkg.Service``).
    services: tuple[str, ...] = Field(min_length=1)
    print_options: TranscoderPrintOptions = TranscoderPrintOptions()
    #: A gRPC error becomes a ``google.rpc.Status`` JSON body (else an empty body with the
    #: ``grpc-status``/``grpc-message`` headers).
    convert_grpc_status: bool = False
    #: Query parameters that name no field are skipped (else the request does not match).
    ignore_unknown_query_parameters: bool = False
    #: Query parameters never mapped to fields (API keys...).
    ignored_query_parameters: tuple[str, ...] = ()
    #: ``+`` in query values means a space.
    query_param_unescape_plus: bool = False
    #: envoykit addition: a JSON body field the message lacks is a 400 (native ignores it).
    reject_unknown_fields: bool = False

    @model_validator(mode="after")
    def _check_descriptor(self) -> TranscoderConfig:
        _registry(self)
        return self


def _registry(config: TranscoderConfig) -> Registry:
    try:
        data = Path(config.proto_descriptor).read_bytes()
    except OSError as exc:
        raise ValueError(
            f"proto_descriptor: cannot read {config.proto_descriptor!r}: {exc.strerror}"
        ) from None
    try:
        return registry_for(data, config.services)
    except DecodeError:
        raise ValueError(f"proto_descriptor: {config.proto_descriptor!r} is not a descriptor set") from None
    except DescriptorError as exc:
        raise ValueError(f"services: {exc}") from None
    except TypeError as exc:  # the pool refuses an inconsistent set
        raise ValueError(f"proto_descriptor: {exc}") from None


@dataclass
class TranscoderState:
    binding: Binding | None = None
    #: The gRPC request body is written.
    encoded: bool = False
    #: Path and query bindings, as JSON, merged under the body.
    bound: dict[str, Any] = field(default_factory=dict)
    #: The response is gRPC and is being transcoded.
    responding: bool = False
    #: Messages seen in the response body.
    messages: int = 0
    #: The client's content-type (an ``HttpBody`` request field keeps it).
    content_type: str = ""


_GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin")


class GrpcJsonTranscoder(HttpFilter[TranscoderConfig, TranscoderState]):
    #: It rewrites ``:method`` to POST: the rendered ext_proc filter unlocks routing headers.
    modifies_routing_headers = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.registry = _registry(cfg)
        options = cfg.print_options
        self.settings = PrintSettings(
            whitespace=options.add_whitespace,
            primitives=options.always_print_primitive_fields,
            enums_as_ints=options.always_print_enums_as_ints,
            proto_names=options.preserve_proto_field_names,
        )
        self.ndjson = options.stream_newline_delimited
        self.skip = frozenset(cfg.ignored_query_parameters)
        by_method: dict[str, list[Binding]] = {}
        for b in self.registry.bindings:
            by_method.setdefault(b.http_method, []).append(b)
        # Literal segments win over variables (the native filter's trie prefers literals).
        for bindings in by_method.values():
            bindings.sort(key=lambda b: -b.template.literals)
        self.by_method = by_method
        self.verbs = frozenset(b.template.verb for b in self.registry.bindings if b.template.verb)
        self._transcoded = self.metrics.counter("transcoded")
        self._rejected = self.metrics.counter("rejected")
        try:
            self.status_cls: Any = self.registry.message_class("google.rpc.Status")
        except KeyError:
            self.status_cls = None

    # -- request -------------------------------------------------------------------------------
    def on_request_headers(self, request: Request, state: TranscoderState) -> Reply | None:
        bindings = self.by_method.get(request.method)
        if not bindings:
            return None
        path, verb = split_path(request.path_only, self.verbs)
        for binding in bindings:
            values = binding.template.match(path, verb)
            if values is None:
                continue
            try:
                bound = bindings_to_dict(
                    binding.method.descriptor.input_type,
                    values,
                    parse_query(request.query, unescape_plus=self.config.query_param_unescape_plus),
                    skip=self.skip,
                    ignore_unknown=self.config.ignore_unknown_query_parameters,
                )
            except NoMatch:
                return None  # an unknown query parameter: not a transcoded request
            except RequestError as exc:
                return self._bad_request(str(exc))
            state.binding, state.bound = binding, bound
            headers = request.headers
            state.content_type = headers.get("content-type") or ""
            headers.set("x-envoy-original-path", request.path)
            request.path = binding.method.grpc_path
            headers.set(":method", "POST")
            headers.set("content-type", "application/grpc")
            headers.set("te", "trailers")
            if request.end_of_stream:  # no body will come: the message is complete now
                return self._encode(request, state, b"")
            return None
        return None

    def on_request_body(self, request: Request, state: TranscoderState) -> Reply | None:
        if state.binding is None or state.encoded:
            return None
        return self._encode(request, state, request.body)

    def _encode(self, request: Request, state: TranscoderState, body: bytes) -> Reply | None:
        binding = state.binding
        assert binding is not None
        method = binding.method
        # A rule without ``body`` still reads a JSON body as the whole message, as natively.
        body_path = binding.body if binding.body is not None else ()
        try:
            if method.client_streaming:
                payload = self._encode_stream(state, body_path, body)
            else:
                message = self._new_message(state)
                self._parse_body(message, body_path, body, state.content_type)
                payload = frame(message.SerializeToString())
        except (RequestError, json_format.ParseError) as exc:
            return self._bad_request(str(exc))
        request.body = payload
        state.encoded = True
        self._transcoded.inc()
        return None

    def _new_message(self, state: TranscoderState) -> Any:
        """A request message holding the path and query bindings."""
        assert state.binding is not None
        message = state.binding.method.input_cls()
        json_format.ParseDict(state.bound, message, descriptor_pool=self.registry.pool)
        return message

    def _encode_stream(self, state: TranscoderState, body_path: tuple[str, ...], body: bytes) -> bytes:
        """A client stream: the body is a JSON array, one message per item; the path and query
        bindings go into the first message only (as natively)."""
        items = _load_json(body) if body.strip() else None
        if not isinstance(items, list):
            raise RequestError("a streaming request body must be a JSON array of messages")
        frames = []
        for index, item in enumerate(items):
            assert state.binding is not None
            message = self._new_message(state) if index == 0 else state.binding.method.input_cls()
            self._apply_json(message, body_path, item)
            frames.append(frame(message.SerializeToString()))
        return b"".join(frames)

    def _parse_body(self, message: Any, path: tuple[str, ...], body: bytes, content_type: str) -> None:
        target = _pick(message, path[:-1])
        descriptor = (
            target.DESCRIPTOR if not path else target.DESCRIPTOR.fields_by_name[path[-1]].message_type
        )
        if is_http_body(descriptor):
            holder = getattr(target, path[-1]) if path else target
            holder.content_type = content_type
            holder.data = body
            return
        if body.strip():
            self._apply_json(message, path, _load_json(body))

    def _apply_json(self, message: Any, path: tuple[str, ...], value: Any) -> None:
        """Merge ``value`` (parsed JSON) into ``message`` at ``path`` (``()``: the message)."""
        drop = not self.config.reject_unknown_fields
        pool = self.registry.pool
        if not path:
            if not isinstance(value, dict):
                raise RequestError("the request body must be a JSON object")
            json_format.ParseDict(
                prepare(value, message.DESCRIPTOR, drop_unknown=drop), message, descriptor_pool=pool
            )
            return
        target = _pick(message, path[:-1])
        wrapped = prepare({path[-1]: value}, target.DESCRIPTOR, drop_unknown=drop)
        json_format.ParseDict(wrapped, target, descriptor_pool=pool)

    def _bad_request(self, message: str) -> Reply:
        self._rejected.inc()
        return Reply(400, message, headers={"content-type": "text/plain"})

    # -- response ------------------------------------------------------------------------------
    def on_response_headers(self, response: Response, state: TranscoderState) -> Reply | None:
        if state.binding is None or response.is_local_reply:
            return None
        headers = response.headers
        if not (headers.get("content-type") or "").startswith("application/grpc"):
            return None  # not a gRPC answer (an Envoy error, a plain HTTP backend): as is
        status = headers.get("grpc-status")
        if status is not None and response.end_of_stream:  # trailers-only: an error
            if self.config.convert_grpc_status or state.binding.method.server_streaming:
                return self._status_reply(state, headers)
            # As the native filter: the mapped status, the gRPC headers as they are, no body.
            response.status = http_status(_grpc_code(status))
            return None
        state.responding = True
        return None

    def on_response_body(self, response: Response, state: TranscoderState) -> Reply | None:
        if not state.responding:
            return None
        binding = state.binding
        assert binding is not None
        method = binding.method
        try:
            messages = [method.output_cls.FromString(p) for p in unframe(response.body)]
        except (ValueError, DecodeError) as exc:
            log.warning("bad gRPC response for %s: %s", method.grpc_path, exc)
            return Reply(502, "bad gRPC response from the upstream\n", headers={"content-type": "text/plain"})
        state.messages = len(messages)
        headers = response.headers
        if binding.response_body:
            picked = [_pick(m, binding.response_body) for m in messages]
            if picked and not hasattr(picked[0], "DESCRIPTOR"):  # a scalar or repeated field
                parts = [_field_json(m, binding.response_body, self.settings) for m in messages]
                self._set_json(response, method.server_streaming, parts)
                return None
            messages = picked
        if messages and is_http_body(messages[0].DESCRIPTOR):
            headers.set("content-type", messages[0].content_type)
            response.body = (
                b"".join(m.data for m in messages) if method.server_streaming else messages[0].data
            )
            return None
        self._set_json(
            response,
            method.server_streaming,
            [to_json(m, self.settings, self.registry.pool) for m in messages],
        )
        return None

    def _set_json(self, response: Response, streaming: bool, parts: list[str]) -> None:
        response.headers.set("content-type", "application/json")
        if streaming:
            text = "".join(p + "\n" for p in parts) if self.ndjson else "[" + ",".join(parts) + "]"
        else:
            text = parts[0] if parts else ""
        response.body = text.encode()

    def on_response_trailers(self, response: Response, state: TranscoderState) -> Reply | None:
        if not state.responding:
            return None
        status = response.trailers.get("grpc-status") or "0"
        if status != "0" and not state.messages:
            # Headers, no message, then an error status: Envoy still holds the headers (the
            # buffered body never started), so the error can become the whole answer.
            return self._status_reply(state, response.trailers, late=True)
        for name in _GRPC_HEADERS:
            response.trailers.remove(name)
        return None

    def _status_reply(self, state: TranscoderState, source: Headers, *, late: bool = False) -> Reply:
        """The error answer for the status in ``source`` (headers or trailers). Converted, it
        is the ``google.rpc.Status`` JSON (from ``grpc-status-details-bin`` when sent);
        otherwise its body is the native filter's: ``[]`` for streams and for a status that
        came in trailers, else nothing."""
        status = source.get("grpc-status") or "2"
        message = source.get("grpc-message") or ""
        code = _grpc_code(status)
        http = http_status(code)
        binding = state.binding
        assert binding is not None
        if self.config.convert_grpc_status:
            body = self._status_json(code, unquote(message), source.get("grpc-status-details-bin"))
            return Reply(http, body, headers={"content-type": "application/json"})
        headers = {"grpc-status": status, "grpc-message": message}
        if not binding.method.server_streaming and not late:
            return Reply(http, "", headers={"content-type": "application/grpc", **headers})
        return Reply(
            http, "" if self.ndjson else "[]", headers={"content-type": "application/json", **headers}
        )

    def _status_json(self, code: int, message: str, details_bin: str | None) -> str:
        status_cls = self.status_cls
        if status_cls is None:  # google/rpc/status.proto is not in the descriptor set
            payload: dict[str, Any] = {"code": code, "message": message}
            if self.settings.primitives:
                payload["details"] = []
            return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        status = None
        if details_bin:
            try:
                status = status_cls.FromString(base64.b64decode(details_bin + "=" * (-len(details_bin) % 4)))
            except (ValueError, DecodeError):
                status = None
        if status is None:
            status = status_cls(code=code, message=message)
        try:
            return to_json(status, self.settings, self.registry.pool)
        except (KeyError, TypeError, json_format.SerializeToJsonError):  # a detail of an unknown type
            return to_json(status_cls(code=status.code, message=status.message), self.settings)


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body, strict=False)  # raw control characters in strings pass, as natively
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"Unexpected token: {exc}") from None


def _grpc_code(status: str) -> int:
    try:
        return int(status)
    except ValueError:
        return 2  # UNKNOWN


def _field_json(message: Any, path: tuple[str, ...], settings: PrintSettings) -> str:
    """A non-message ``response_body`` field as JSON (the field's value in the message's JSON)."""
    parent = _pick(message, path[:-1])
    whole = json.loads(to_json(parent, PrintSettings(False, True, settings.enums_as_ints, True)))
    return json.dumps(whole.get(path[-1]), separators=(",", ":"))


def _pick(message: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        message = getattr(message, name)
    return message
