"""Testing kit for filter authors.

- ``Harness``: drive a filter or chain in-process, no Envoy needed.
- pytest fixtures (registered automatically as the ``envoykit`` pytest plugin) that start a real
  Envoy, an echo upstream and the sidecar: see ``envoykit.testing.plugin``.
- The pieces behind those fixtures, usable without pytest: ``EnvoyProcess`` / ``EnvoyFactory``
  (run a real Envoy), ``validate_bootstrap`` (``envoy --mode validate``), ``EchoUpstream`` (an
  HTTP/1.1 upstream that echoes what it received), ``raw_request`` / ``RawConnection`` (chunk-by-
  chunk HTTP/1.1 with trailers), ``wait_for`` (bounded polling instead of sleeps).
"""

from ._client import RawConnection, RawResponse, raw_request
from ._envoy import (
    EnvoyConfigError,
    EnvoyError,
    EnvoyFactory,
    EnvoyProcess,
    EnvoyStartError,
    envoy_binary,
    validate_bootstrap,
)
from ._harness import Exchange, Harness, Sent, UpstreamResponse
from ._live import LiveGateway, start_gateway
from ._net import free_port, wait_for
from ._upstream import EchoUpstream, ReceivedRequest

__all__ = [
    "Exchange",
    "Harness",
    "Sent",
    "UpstreamResponse",
    "LiveGateway",
    "start_gateway",
    "EchoUpstream",
    "ReceivedRequest",
    "EnvoyProcess",
    "EnvoyFactory",
    "EnvoyError",
    "EnvoyConfigError",
    "EnvoyStartError",
    "envoy_binary",
    "validate_bootstrap",
    "RawConnection",
    "RawResponse",
    "raw_request",
    "wait_for",
    "free_port",
]
