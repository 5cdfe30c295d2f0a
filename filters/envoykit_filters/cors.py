"""CORS at the gateway, with the semantics of Envoy's native ``envoy.filters.http.cors``.

What Envoy 1.40's native filter does (read from its source, then measured; the differential test
``tests/differential/test_cors_differential.py`` holds this filter to it):

- A request is a CORS request when it has a non-empty ``Origin``. The origin is allowed when a
  matcher matches it, or matches the literal ``*``; an allowed origin is echoed back, never ``*``.
- A preflight is ``OPTIONS`` + ``Origin`` + a non-empty ``Access-Control-Request-Method``. From an
  allowed origin it is answered at the gateway (200, no body). From a disallowed one it goes on to
  the upstream (``forward_not_matching_preflights``, default true), or is answered without
  ``access-control-allow-origin`` when that is false.
- Every other response to an allowed origin (upstream or local reply, any status) gets
  ``access-control-allow-origin``, ``-allow-credentials`` and ``-expose-headers``; the preflight
  reply gets them too. A disallowed origin gets no CORS headers. Envoy adds no ``vary``.
- ``allow_methods``/``allow_headers`` of ``*`` echo the preflight's requested method/headers.

envoykit adds: exact/wildcard/regex origins as separate fields, ``deny`` (403 for a disallowed
origin) and ``vary_origin``. Per-route overrides inherit every field they leave unset, the way
Envoy's route policy falls back to the virtual host's field by field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request, Response

from ._routes import RouteMatch, first_match

__all__ = ["Cors", "CorsConfig", "CorsPolicy", "CorsRoute", "CorsState"]

#: An HTTP token (method or header name), or ``*``.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: ``[scheme://]*.domain[:port]``: the wildcard is the leftmost label(s) only.
_WILDCARD = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?\*\.(?P<domain>[A-Za-z0-9.-]+)(?::(?P<port>\d+))?"
)
_LABELS = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"


def _tokens(field: str, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    for value in values:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {field} entry (an HTTP token, or '*')")
    if "*" in values and len(values) > 1:
        raise ValueError("'*' must be the only entry")
    return values


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    """``https://*.example.com`` as a full-match regex: one or more labels where the ``*`` is."""
    parts = _WILDCARD.fullmatch(pattern)
    if parts is None:
        raise ValueError(
            f"{pattern!r}: '*' may only stand for the leftmost label(s), e.g. 'https://*.example.com'"
        )
    scheme = re.escape(parts["scheme"]) if parts["scheme"] else r"[A-Za-z][A-Za-z0-9+.-]*"
    port = f":{parts['port']}" if parts["port"] else ""
    return re.compile(f"{scheme}://{_LABELS}\\.{re.escape(parts['domain'])}{port}")


class CorsPolicy(FilterConfig):
    """The CORS fields. At the top level an unset field takes the default given in the docs; in a
    route override an unset field keeps the top-level value."""

    #: Exact origins (``https://app.example.com``, ``null``), ``*`` (any origin), or wildcard
    #: subdomains (``https://*.example.com``, ``*.example.com`` for any scheme).
    allow_origins: tuple[str, ...] | None = None
    #: Regexes (Python ``re`` syntax) the whole origin must match, like Envoy's ``safe_regex``.
    allow_origin_regexes: tuple[str, ...] | None = None
    #: Preflight ``access-control-allow-methods``; ``["*"]`` echoes the requested method.
    allow_methods: tuple[str, ...] | None = None
    #: Preflight ``access-control-allow-headers``; ``["*"]`` echoes the requested headers.
    allow_headers: tuple[str, ...] | None = None
    #: ``access-control-expose-headers`` on responses to allowed origins.
    expose_headers: tuple[str, ...] | None = None
    #: Preflight ``access-control-max-age``, seconds.
    max_age: int | None = Field(None, ge=0)
    #: Send ``access-control-allow-credentials: true`` (default false).
    allow_credentials: bool | None = None
    #: Answer ``access-control-request-private-network: true`` in preflights (default false).
    allow_private_network: bool | None = None
    #: A preflight from a disallowed origin goes to the upstream (default true, as in Envoy);
    #: false answers it at the gateway without ``access-control-allow-origin``.
    forward_not_matching_preflights: bool | None = None
    #: Answer requests from a disallowed origin with 403 (default false: they flow, without
    #: CORS headers). Requests without ``Origin`` are never refused.
    deny: bool | None = None
    #: Add ``vary: origin`` to every response of the route (default false, as Envoy).
    vary_origin: bool | None = None
    #: CORS handling on (default true); ``false`` in a route override turns it off there.
    enabled: bool | None = None

    @field_validator("allow_origins")
    @classmethod
    def _check_origins(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for value in values or ():
            if not value:
                raise ValueError("an origin cannot be empty")
            if value != "*" and "*" in value:
                _wildcard_regex(value)
            elif value.endswith("/"):
                raise ValueError(f"{value!r}: an origin has no path; drop the trailing '/'")
        return values

    @field_validator("allow_origin_regexes")
    @classmethod
    def _check_regexes(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for value in values or ():
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return values

    @field_validator("allow_methods")
    @classmethod
    def _check_methods(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _tokens("allow_methods", values)

    @field_validator("allow_headers")
    @classmethod
    def _check_headers(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _tokens("allow_headers", values)

    @field_validator("expose_headers")
    @classmethod
    def _check_expose(cls, values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _tokens("expose_headers", values)


class CorsRoute(CorsPolicy):
    """A per-route override: the first whose ``match`` holds wins; unset fields are inherited."""

    match: RouteMatch


class CorsConfig(CorsPolicy):
    routes: tuple[CorsRoute, ...] = ()


class _Resolved:
    """One route's effective policy, precomputed so a request only does lookups."""

    __slots__ = (
        "allow_any",
        "credentials",
        "deny",
        "enabled",
        "expose",
        "forward",
        "headers",
        "max_age",
        "methods",
        "origins",
        "patterns",
        "private_network",
        "vary",
    )

    def __init__(self, policy: CorsPolicy, base: CorsPolicy | None = None) -> None:
        def get(name: str) -> Any:
            value = getattr(policy, name)
            return getattr(base, name) if value is None and base is not None else value

        # The origin fields are one list (Envoy's allow_origin_string_match): set either to replace it.
        source = policy
        if base is not None and policy.allow_origins is None and policy.allow_origin_regexes is None:
            source = base
        exact: set[str] = set()
        patterns = [re.compile(r) for r in source.allow_origin_regexes or ()]
        for origin in source.allow_origins or ():
            if origin != "*" and "*" in origin:
                patterns.append(_wildcard_regex(origin))
            else:
                exact.add(origin)
        self.origins = frozenset(exact)
        self.patterns = tuple(patterns)
        # Envoy: an origin is allowed when a matcher matches it or matches the literal "*".
        self.allow_any = "*" in exact or any(p.fullmatch("*") for p in patterns)
        self.methods: str = ", ".join(get("allow_methods") or ())
        self.headers: str = ", ".join(get("allow_headers") or ())
        self.expose: str = ", ".join(get("expose_headers") or ())
        max_age = get("max_age")
        self.max_age = "" if max_age is None else str(max_age)
        self.credentials: bool = get("allow_credentials") is True
        self.private_network: bool = get("allow_private_network") is True
        self.forward: bool = get("forward_not_matching_preflights") is not False
        self.deny: bool = get("deny") is True
        self.vary: bool = get("vary_origin") is True
        self.enabled: bool = get("enabled") is not False

    def allows(self, origin: str) -> bool:
        return self.allow_any or origin in self.origins or any(p.fullmatch(origin) for p in self.patterns)


@dataclass
class CorsState:
    #: The route's policy when CORS is enabled there, else ``None``.
    policy: _Resolved | None = None
    #: The allowed origin to echo back; empty when there is none.
    origin: str = ""


class Cors(HttpFilter[CorsConfig, CorsState]):
    """Answer CORS preflights at the gateway and add CORS headers for allowed origins."""

    name = "cors"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._default = _Resolved(self.config)
        self._by_route = {id(r): _Resolved(r, self.config) for r in self.config.routes}
        self._preflights = self.metrics.counter("preflights")
        self._allowed = self.metrics.counter("allowed")
        self._denied = self.metrics.counter("denied")

    def on_request_headers(self, request: Request, state: CorsState) -> Reply | None:
        override = first_match(self.config.routes, request)
        policy = self._default if override is None else self._by_route[id(override)]
        if not policy.enabled:
            return None
        state.policy = policy
        headers = request.headers
        origin = headers.get("origin")
        if not origin:
            return None  # not a CORS request
        allowed = policy.allows(origin)
        if allowed:
            self._allowed.inc()
            state.origin = origin
        else:
            self._denied.inc()
            if policy.deny:
                return Reply(403, "origin not allowed\n", details="envoykit_cors_denied")
        requested_method = headers.get("access-control-request-method")
        if request.method != "OPTIONS" or not requested_method:
            return None  # a simple (or actual) request: headers are added on the response
        if not allowed and policy.forward:
            return None
        self._preflights.inc()
        reply: list[tuple[str, str]] = []
        if allowed:
            reply.append(("access-control-allow-origin", origin))
        if policy.credentials:
            reply.append(("access-control-allow-credentials", "true"))
        if policy.methods:
            methods = requested_method if policy.methods == "*" else policy.methods
            reply.append(("access-control-allow-methods", methods))
        if policy.headers:
            asked = headers.get("access-control-request-headers") or ""
            reply.append(("access-control-allow-headers", asked if policy.headers == "*" else policy.headers))
        if policy.max_age:
            reply.append(("access-control-max-age", policy.max_age))
        if policy.private_network and headers.get("access-control-request-private-network") == "true":
            reply.append(("access-control-allow-private-network", "true"))
        # The reply passes back through on_response_headers, which adds expose-headers: as Envoy.
        return Reply(200, headers=reply, details="cors_response")

    def on_response_headers(self, response: Response, state: CorsState) -> Reply | None:
        policy = state.policy
        if policy is None:
            return None
        headers = response.headers
        if state.origin:
            headers.set("access-control-allow-origin", state.origin)
            if policy.credentials:
                headers.set("access-control-allow-credentials", "true")
            if policy.expose:
                headers.set("access-control-expose-headers", policy.expose)
        if policy.vary:
            vary = headers.get_all("vary")
            listed = {v.strip().lower() for value in vary for v in value.split(",")}
            if not listed & {"origin", "*"}:
                headers.set("vary", ", ".join([*vary, "origin"]))
        return None
