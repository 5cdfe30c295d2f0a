"""The gateway config file (``envoykit.yaml``): listener, upstreams, chains and routes.

One file drives everything a platform team runs: ``envoykit serve`` builds the chains from it,
``envoykit envoy-config`` renders the matching Envoy bootstrap, ``envoykit demo`` runs both.
Keeping them in one model means the sidecar and Envoy can never disagree about which chains
exist or which phases each one needs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "GatewayConfig",
    "ListenerSpec",
    "AdminSpec",
    "SidecarSpec",
    "UpstreamSpec",
    "FilterSpec",
    "RouteSpec",
    "InProxySpec",
    "AuthzSpec",
    "AuthzBodySpec",
    "RateLimitSpec",
    "DEFAULT_REQUEST_ATTRIBUTES",
]

#: Envoy attributes the sidecar asks for by default: cheap, and what filters commonly need.
DEFAULT_REQUEST_ATTRIBUTES = (
    "source.address",
    "destination.address",
    "connection.mtls",
    "connection.tls_version",
    "connection.requested_server_name",
    "xds.route_name",
    "request.id",
)


#: A lower-case HTTP header name (RFC 9110 token).
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'+.^_`|~-]+")


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenerSpec(_Spec):
    address: str = "127.0.0.1"
    port: int = Field(10000, ge=0, le=65535)


class AdminSpec(_Spec):
    address: str = "127.0.0.1"
    port: int = Field(9901, ge=0, le=65535)


class SidecarSpec(_Spec):
    """Where the ext_proc sidecar listens and how Envoy treats it."""

    #: ``host:port`` or ``unix:/abs/path.sock`` (Envoy then uses a ``pipe`` address).
    address: str = "127.0.0.1:50051"
    #: Envoy's ext_proc ``failure_mode_allow``: pass requests through when the sidecar is down.
    failure_mode_allow: bool = False
    message_timeout_ms: int = Field(1000, gt=0, le=3_600_000)
    #: Prometheus endpoint of the sidecar, ``host:port``; empty string turns it off.
    metrics_address: str = "127.0.0.1:9464"
    #: Grace period for in-flight requests on shutdown.
    drain_seconds: float = Field(5.0, ge=0, le=300)
    #: ``aio`` (one event loop, best tail latency) or ``threads`` (grpcio thread pool, less CPU
    #: per request; each in-flight request holds a thread). ``h2``: the native HTTP/2 server
    #: (least CPU per stream; sync hooks only). See docs/sidecar.md.
    server: Literal["aio", "threads", "h2"] = "aio"
    threads: int = Field(16, ge=1, le=1024)
    #: Request header that selects a chain. Only safe if Envoy sets it (clients could too).
    chain_header: str | None = None
    request_attributes: tuple[str, ...] = DEFAULT_REQUEST_ATTRIBUTES
    #: Where the HTTP ext_authz server listens (``authz.protocol: http``), ``host:port``.
    authz_http_address: str = "127.0.0.1:50052"

    @field_validator("address", "authz_http_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if value.startswith("unix:"):
            if not value[5:].startswith("/"):
                raise ValueError("a unix socket address must be absolute: unix:/path/to.sock")
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected host:port (e.g. 127.0.0.1:50051) or unix:/path.sock")
        return value

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


class UpstreamSpec(_Spec):
    """A backend Envoy routes to."""

    url: str
    http2: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError("expected http://host:port (TLS upstreams are not supported yet)")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


class FilterSpec(_Spec):
    """One filter in a chain: which class, its config, and what happens when it raises."""

    #: A registered name (``add-headers``) or ``module:Class`` / ``file.py:Class``.
    filter: str
    #: Instance name for metrics, logs and the metadata namespace (default: the class's name).
    name: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    failure_mode: Literal["closed", "open"] = "closed"
    metadata_namespace: str | None = None


class InProxySpec(_Spec):
    """A chain that runs inside Envoy as Wasm (on every route, before the sidecar's chains)."""

    chain: str
    #: The proxy-wasm module (``envoykit build-wasm``); relative to the gateway file.
    module: str
    #: Optional filter module to build ``module`` from, automatically and incrementally.
    source: str | None = None


class AuthzBodySpec(_Spec):
    """Envoy's ext_authz ``with_request_body``: buffer the body and send it with the check."""

    max_request_bytes: int = Field(8192, gt=0, le=64 * 1024 * 1024)
    #: True: send the first ``max_request_bytes`` of a larger body; false: Envoy answers 413.
    allow_partial_message: bool = False
    #: Send the body as bytes (``raw_body``), so binary bodies arrive intact.
    pack_as_bytes: bool = True


class AuthzSpec(_Spec):
    """A chain run by Envoy's ``ext_authz`` filter (before any ext_proc chain) on every route."""

    chain: str
    #: Envoy's ext_authz ``failure_mode_allow``: let requests through when the sidecar is down.
    failure_mode_allow: bool = False
    #: Status Envoy answers when the check fails (sidecar down, timeout) and failure_mode_allow is off.
    status_on_error: int = Field(500, ge=200, le=599)
    timeout_ms: int = Field(1000, gt=0, le=3_600_000)
    #: Forward the request body (default: only when a filter of the chain has a body hook).
    with_request_body: AuthzBodySpec | None = None
    #: Send the client's TLS certificate (``attributes.source.certificate``).
    include_peer_certificate: bool = False
    #: Envoy dynamic-metadata namespaces to forward (e.g. ``envoy.filters.http.jwt_authn``).
    metadata_context_namespaces: tuple[str, ...] = ()
    #: Decision log (JSON lines): a file path, ``"-"`` for stdout, omitted for none.
    decision_log: str | None = None
    #: Also log the request headers (credentials redacted).
    decision_log_headers: bool = False
    #: ``grpc`` (the sidecar's ``Authorization/Check``) or ``http`` (Envoy's ``http_service`` to
    #: ``sidecar.authz_http_address``: cheaper for Envoy, no dynamic metadata; docs/extauthz.md).
    protocol: Literal["grpc", "http"] = "grpc"
    #: HTTP mode: request headers Envoy sends to the check (default: all but hop-by-hop ones).
    #: Exact lower-case names, or ``prefix*``.
    allowed_headers: tuple[str, ...] | None = None
    #: HTTP mode: headers of an allow answer Envoy copies to the upstream request (``*``: any
    #: header the chain set, ``prefix*``, or exact names).
    allowed_upstream_headers: tuple[str, ...] = ("*",)
    #: HTTP mode: headers of a denial Envoy passes to the client (default: all of them).
    allowed_client_headers: tuple[str, ...] | None = None

    @field_validator("allowed_headers", "allowed_upstream_headers", "allowed_client_headers")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for pattern in value or ():
            name = pattern.removesuffix("*")
            if pattern != "*" and (not name or "*" in name or not _HEADER_NAME.fullmatch(name)):
                raise ValueError(f"{pattern!r} is not a header name, 'prefix*' or '*'")
        return value

    @model_validator(mode="after")
    def _check_protocol(self) -> AuthzSpec:
        changed = self.model_fields_set & {
            "allowed_headers",
            "allowed_upstream_headers",
            "allowed_client_headers",
        }
        if self.protocol == "grpc" and changed:
            raise ValueError(f"{', '.join(sorted(changed))} only apply to protocol: http")
        return self


class RateLimitSpec(_Spec):
    """Envoy's native ``envoy.filters.http.ratelimit`` calling a global rate-limit service
    (``envoykit ratelimit serve`` or envoyproxy/ratelimit)."""

    #: ``host:port`` of the rate-limit service (gRPC, HTTP/2).
    address: str = "127.0.0.1:8081"
    #: The ``domain`` of the service's config files this gateway's descriptors belong to.
    domain: str = Field(min_length=1)
    #: Refuse requests (500) when the service cannot answer; default lets them through.
    failure_mode_deny: bool = False
    timeout_ms: int = Field(100, gt=0, le=60_000)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError("expected host:port (e.g. 127.0.0.1:8081)")
        return value


class RouteSpec(_Spec):
    """A route: match a path, send to an upstream, through a chain (or none)."""

    prefix: str | None = None
    path: str | None = None
    upstream: str
    #: The chain to run; omitted means the default chain, ``null`` means no processing.
    chain: str | None = None
    name: str | None = None
    #: Run the gateway's ``authz`` chain on this route (true by default when there is one).
    authz: bool = True
    #: Run the gateway's ``in_proxy`` (Wasm) chain on this route (true by default when there is one).
    in_proxy: bool = True
    #: Envoy route ``rate_limits`` (``[{actions: [{remote_address: {}}, ...]}]``, Envoy's own
    #: format): the descriptors sent to the ``ratelimit`` service for this route.
    rate_limits: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, entry in enumerate(value):
            actions = entry.get("actions")
            if not isinstance(actions, list) or not actions:
                raise ValueError(f"entry {i}: needs a non-empty 'actions' list (Envoy's RateLimit format)")
        return value

    @model_validator(mode="after")
    def _one_match(self) -> RouteSpec:
        if (self.prefix is None) == (self.path is None):
            raise ValueError("give exactly one of prefix or path")
        for value in (self.prefix, self.path):
            if value is not None and not value.startswith("/"):
                raise ValueError("prefix/path must start with /")
        return self

    def chain_name(self, default: str | None) -> str | None:
        return self.chain if "chain" in self.model_fields_set else default


class GatewayConfig(_Spec):
    listener: ListenerSpec = ListenerSpec()
    admin: AdminSpec = AdminSpec()
    sidecar: SidecarSpec = SidecarSpec()
    upstreams: dict[str, UpstreamSpec] = Field(min_length=1)
    chains: dict[str, list[FilterSpec]] = Field(default_factory=dict)
    default_chain: str | None = None
    routes: list[RouteSpec] = Field(min_length=1)
    #: Access log destination: a file path, ``"-"`` for stdout, or omitted for none.
    access_log: str | None = None
    in_proxy: InProxySpec | None = None
    #: A chain Envoy's ext_authz filter runs (see docs/extauthz.md).
    authz: AuthzSpec | None = None
    #: A global rate-limit service for routes with ``rate_limits``.
    ratelimit: RateLimitSpec | None = None

    def reference_errors(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Names that point nowhere, as (location, reason): checked after field validation so
        each error can name its own field and line."""
        errors: list[tuple[tuple[int | str, ...], str]] = []
        if self.default_chain is not None and self.default_chain not in self.chains:
            errors.append(
                (("default_chain",), f"{self.default_chain!r} is not one of chains: {sorted(self.chains)}")
            )
        for i, route in enumerate(self.routes):
            if route.upstream not in self.upstreams:
                errors.append(
                    (
                        ("routes", i, "upstream"),
                        f"{route.upstream!r} is not one of upstreams: {sorted(self.upstreams)}",
                    )
                )
            chain = route.chain_name(self.effective_default_chain)
            if chain is not None and chain not in self.chains:
                where: tuple[int | str, ...] = (
                    ("routes", i, "chain") if "chain" in route.model_fields_set else ("routes", i)
                )
                errors.append((where, f"chain {chain!r} is not one of chains: {sorted(self.chains)}"))
        if self.ratelimit is None:
            for i, route in enumerate(self.routes):
                if route.rate_limits:
                    errors.append((("routes", i, "rate_limits"), "needs a top-level 'ratelimit' section"))
        if self.in_proxy is not None:
            name = self.in_proxy.chain
            if name not in self.chains:
                errors.append(
                    (("in_proxy", "chain"), f"{name!r} is not one of chains: {sorted(self.chains)}")
                )
            elif any(r.chain_name(self.effective_default_chain) == name for r in self.routes):
                errors.append(
                    (
                        ("in_proxy", "chain"),
                        f"chain {name!r} runs in-proxy; routes must not also send it to the sidecar",
                    )
                )
        if self.authz is not None:
            name = self.authz.chain
            if name not in self.chains:
                errors.append((("authz", "chain"), f"{name!r} is not one of chains: {sorted(self.chains)}"))
            elif self.in_proxy is not None and self.in_proxy.chain == name:
                errors.append((("authz", "chain"), f"chain {name!r} already runs in-proxy"))
        return errors

    @property
    def effective_default_chain(self) -> str | None:
        """``default_chain``, or the chain named ``default`` when there is one."""
        if self.default_chain is not None:
            return self.default_chain
        return "default" if "default" in self.chains else None
