"""A ``CheckRequest`` in, envoykit values out; a chain's outcome in, a ``CheckResponse`` out.

Envoy's ext_authz sends the request as ``attributes.request.http``: with ``encode_raw_headers``
(the rendered config sets it) the headers arrive in ``header_map`` with ``raw_value`` bytes and
one entry per value; otherwise in the ``headers`` map (repeated values joined by ``,``). The
pseudo-headers are rebuilt from ``method``/``path``/``host``/``scheme`` when absent. The client
address is ``attributes.source.address``, never a header.

On the way back, a header the chain replaced is one ``OVERWRITE_IF_EXISTS_OR_ADD`` followed by
``APPEND_IF_EXISTS_OR_ADD`` for its further values (ext_authz's default action is *append*, so
the first one must say overwrite), and a removed header goes to ``headers_to_remove``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._attributes import Attributes, TlsInfo
from .._headers import Headers
from .._messages import Response
from ..runtime import struct_to_dict
from ._protos import base_pb2

__all__ = [
    "check_headers",
    "check_body",
    "check_attributes",
    "check_metadata",
    "fill_header_options",
    "denied_response",
    "CHAIN_CONTEXT_KEY",
]

#: ``context_extensions`` key naming the chain (set per route by the rendered config).
CHAIN_CONTEXT_KEY = "envoykit_chain"

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
#: Envoy sets these on a denied response itself.
_NOT_REPLY_HEADERS = frozenset({":status", "content-length"})


def check_headers(http: Any) -> Headers:
    """The request headers of ``attributes.request.http``, pseudo-headers first."""
    if http.HasField("header_map") and http.header_map.headers:
        items = [(h.key, h.raw_value.decode("latin-1") or h.value) for h in http.header_map.headers]
    else:
        items = list(http.headers.items())
    present = {name for name, _ in items if name.startswith(":")}
    pseudo = [
        (name, value)
        for name, value in (
            (":method", http.method),
            (":path", http.path),
            (":authority", http.host),
            (":scheme", http.scheme),
        )
        if name not in present and value
    ]
    return Headers._trusted(pseudo + items)


def check_body(http: Any) -> bytes:
    """The request body Envoy forwarded (``with_request_body``): ``raw_body`` when packed as bytes."""
    return bytes(http.raw_body) if http.raw_body else http.body.encode("utf-8", "surrogateescape")


def _peer(peer: Any) -> tuple[str | None, int | None]:
    if not peer.HasField("address"):
        return None, None
    address = peer.address
    if address.HasField("socket_address"):
        socket = address.socket_address
        return socket.address or None, socket.port_value or None
    if address.HasField("pipe"):
        return address.pipe.path or None, None
    return None, None


def check_attributes(attributes: Any) -> Attributes:
    """``Attributes`` from a CheckRequest's ``attributes`` (``raw`` uses Envoy's attribute names,
    as the ext_proc runtime does, so filters read the same keys in both)."""
    source_address, source_port = _peer(attributes.source)
    destination_address, destination_port = _peer(attributes.destination)
    http = attributes.request.http
    raw: dict[str, Any] = {}
    if source_address is not None:
        raw["source.address"] = f"{source_address}:{source_port}" if source_port else source_address
    if destination_address is not None:
        raw["destination.address"] = (
            f"{destination_address}:{destination_port}" if destination_port else destination_address
        )
    if http.id:
        raw["request.id"] = http.id
    if attributes.context_extensions:
        raw["context_extensions"] = dict(attributes.context_extensions)
    if attributes.HasField("route_metadata_context"):
        raw["xds.route_metadata"] = {
            "filter_metadata": {
                ns: struct_to_dict(values)
                for ns, values in attributes.route_metadata_context.filter_metadata.items()
            }
        }
    tls: TlsInfo | None = None
    sni = attributes.tls_session.sni if attributes.HasField("tls_session") else ""
    principal = attributes.source.principal
    if sni or principal or attributes.source.certificate:
        tls = TlsInfo(
            sni=sni or None,
            peer_certificate_validated=bool(principal or attributes.source.certificate),
            peer_uri_sans=(principal,) if principal.startswith("spiffe://") else (),
            peer_subject=principal if principal and not principal.startswith("spiffe://") else None,
        )
    return Attributes(
        source_address=source_address,
        source_port=source_port,
        destination_address=destination_address,
        destination_port=destination_port,
        tls=tls,
        route_name=None,
        request_id=http.id or None,
        raw=raw,
    )


def check_metadata(attributes: Any) -> Mapping[str, Mapping[str, Any]]:
    """Dynamic metadata Envoy forwarded (``metadata_context_namespaces``)."""
    if not attributes.HasField("metadata_context"):
        return {}
    return {ns: struct_to_dict(v) for ns, v in attributes.metadata_context.filter_metadata.items()}


def fill_header_options(options: Any, changes: list[tuple[str, list[str]]]) -> list[str]:
    """Add ``HeaderValueOption``s for ``header_changes`` output to the repeated field
    ``options``; returns the names to remove."""
    removed: list[str] = []
    for name, values in changes:
        if not values:
            removed.append(name)
            continue
        append = False
        for value in values:
            option = options.add(append_action=_APPEND if append else _OVERWRITE)
            # Envoy 1.40's ext_authz reads the deprecated `append` flag when it is set, and
            # otherwise overwrites every value (measured: only the last survives): set both.
            option.append.value = append
            option.header.key = name
            option.header.value = value
            append = True
    return removed


def denied_response(response: Response, into: Any) -> None:
    """Fill a ``CheckResponse`` (``into``) with the denial a local reply describes."""
    into.status.code = 7  # PERMISSION_DENIED; Envoy uses the HTTP status below
    denied = into.denied_response
    denied.status.code = response.status or 403
    seen: set[str] = set()
    for name, value in response.headers.items():
        if name in _NOT_REPLY_HEADERS:
            continue
        option = denied.headers.add(append_action=_APPEND if name in seen else _OVERWRITE)
        option.append.value = name in seen
        option.header.key = name
        option.header.value = value
        seen.add(name)
    # The proto field is a string: a body that is not UTF-8 is sent with replacement characters.
    denied.body = response.body.decode("utf-8", "replace")
