"""Envoy's ext_proc ``attributes`` to ``envoykit.Attributes``.

Envoy sends the attributes listed in the filter's ``request_attributes`` (and
``response_attributes``) as a ``Struct`` under the filter name, on the first message of a
phase only. Envoy spells ``source.address`` as ``ip:port``, so the port is split off here;
everything received stays available unparsed in ``Attributes.raw``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._attributes import Attributes, TlsInfo
from ..runtime import struct_to_dict

__all__ = ["ATTRIBUTES_KEY", "raw_attributes", "build_attributes", "split_host_port"]

#: The key of ``ProcessingRequest.attributes`` that holds the ext_proc filter's attributes.
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
_NONE = Attributes()  # frozen: one instance serves every request that carries no attributes


def raw_attributes(request: Any) -> dict[str, Any]:
    """Every attribute of a ``ProcessingRequest`` by Envoy attribute name (empty when none)."""
    attributes = request.attributes
    if not attributes:
        return {}
    if ATTRIBUTES_KEY in attributes:
        return struct_to_dict(attributes[ATTRIBUTES_KEY])
    merged: dict[str, Any] = {}  # another filter name (a renamed ext_proc filter)
    for struct in attributes.values():
        merged.update(struct_to_dict(struct))
    return merged


def split_host_port(value: str) -> tuple[str, int | None]:
    """``"10.0.0.1:443"`` -> ``("10.0.0.1", 443)``, ``"[::1]:80"`` -> ``("::1", 80)``.

    A value without a port (a bare IPv6 address, a unix socket path) comes back whole.
    """
    if value.startswith("["):
        host, sep, port = value[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    host, sep, port = value.rpartition(":")
    if not sep or ":" in host or not port.isdigit():
        return value, None
    return host, int(port)


def build_attributes(raw: Mapping[str, Any]) -> Attributes:
    """``Attributes`` from raw attributes (``raw`` keeps all of them)."""
    if not raw:
        return _NONE
    source_address, source_port = _address(raw, "source")
    destination_address, destination_port = _address(raw, "destination")
    tls: TlsInfo | None = None
    version = _str(raw.get("connection.tls_version"))
    mtls = raw.get("connection.mtls") is True
    if version or mtls:
        sans = raw.get("connection.uri_san_peer_certificate")
        tls = TlsInfo(
            version=version,
            sni=_str(raw.get("connection.requested_server_name")),
            peer_certificate_validated=mtls,
            peer_subject=_str(raw.get("connection.subject_peer_certificate")),
            peer_uri_sans=(sans,) if isinstance(sans, str) and sans else (),
        )
    return Attributes(
        source_address=source_address,
        source_port=source_port,
        destination_address=destination_address,
        destination_port=destination_port,
        tls=tls,
        route_name=_str(raw.get("xds.route_name")),
        request_id=_str(raw.get("request.id")),
        raw=raw,
    )


def _address(raw: Mapping[str, Any], side: str) -> tuple[str | None, int | None]:
    address = _str(raw.get(f"{side}.address"))
    port: int | None = None
    if address is not None:
        address, port = split_host_port(address)
    explicit = raw.get(f"{side}.port")
    if isinstance(explicit, (int, float)) and not isinstance(explicit, bool):
        port = int(explicit)
    return address, port


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
