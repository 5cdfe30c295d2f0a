"""Facts about the request that Envoy knows and the client cannot forge.

Runtimes fill these from what their host exposes (ext_proc ``attributes``, proxy-wasm
properties, the test host's arguments). Anything not listed here stays available, unparsed,
in ``raw`` under Envoy's attribute name (e.g. ``"request.id"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Attributes", "TlsInfo"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The downstream TLS session, when there is one."""

    version: str | None = None
    sni: str | None = None
    #: True when the client presented a certificate that Envoy verified (mTLS).
    peer_certificate_validated: bool = False
    peer_subject: str | None = None
    peer_uri_sans: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attributes:
    """Connection and routing facts for one request."""

    source_address: str | None = None
    source_port: int | None = None
    destination_address: str | None = None
    destination_port: int | None = None
    tls: TlsInfo | None = None
    route_name: str | None = None
    request_id: str | None = None
    #: Every attribute the runtime received, by Envoy attribute name.
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
