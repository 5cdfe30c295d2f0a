"""The gateway file: one YAML that describes listener, upstreams, filter chains and routes."""

from ._load import FILTER_ENTRY_POINTS, Gateway, build_chains, load_gateway, parse_gateway, resolve_filter
from ._model import (
    DEFAULT_REQUEST_ATTRIBUTES,
    AdminSpec,
    AuthzBodySpec,
    AuthzSpec,
    FilterSpec,
    GatewayConfig,
    InProxySpec,
    ListenerSpec,
    RateLimitSpec,
    RouteSpec,
    SidecarSpec,
    UpstreamSpec,
)

__all__ = [
    "AdminSpec",
    "AuthzBodySpec",
    "AuthzSpec",
    "DEFAULT_REQUEST_ATTRIBUTES",
    "FILTER_ENTRY_POINTS",
    "FilterSpec",
    "Gateway",
    "GatewayConfig",
    "InProxySpec",
    "ListenerSpec",
    "RateLimitSpec",
    "RouteSpec",
    "SidecarSpec",
    "UpstreamSpec",
    "build_chains",
    "load_gateway",
    "parse_gateway",
    "resolve_filter",
]
