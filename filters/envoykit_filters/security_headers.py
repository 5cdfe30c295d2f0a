"""Security response headers: OWASP-style presets, custom headers, identifying headers removed.

Every response gets the headers of its plan, local replies included (response hooks run on
them). A value the upstream already sent is kept unless ``overwrite`` is true, so an application
that knows better (its own Content-Security-Policy) wins by default. Per-route overrides pick
another preset or change the custom headers for some paths, hosts or Envoy routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request, Response

from ._header_names import header_name, header_names, header_value
from ._routes import RouteMatch, first_match

__all__ = [
    "IDENTIFYING_HEADERS",
    "PRESETS",
    "SecurityHeaders",
    "SecurityHeadersConfig",
    "SecurityHeadersOverride",
]

Preset = Literal["strict", "standard", "none"]

#: The values of each preset (docs/filters/security-headers.md explains each choice). ``strict``
#: follows the OWASP Secure Headers Project's recommended values; ``standard`` keeps what is
#: safe for almost any site (no script or cross-origin embedding restrictions that break pages).
PRESETS: dict[str, tuple[tuple[str, str], ...]] = {
    "strict": (
        ("strict-transport-security", "max-age=31536000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'self'; form-action 'self'; base-uri 'self'; object-src 'none'; "
            "frame-ancestors 'none'; upgrade-insecure-requests",
        ),
        ("referrer-policy", "no-referrer"),
        (
            "permissions-policy",
            "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
            "fullscreen=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), "
            "payment=(), picture-in-picture=(), publickey-credentials-get=(), screen-wake-lock=(), "
            "sync-xhr=(self), usb=(), xr-spatial-tracking=()",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-embedder-policy", "require-corp"),
        ("cross-origin-resource-policy", "same-origin"),
        ("x-permitted-cross-domain-policies", "none"),
    ),
    "standard": (
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
        ("content-security-policy", "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
        ("cross-origin-opener-policy", "same-origin-allow-popups"),
        ("cross-origin-resource-policy", "same-site"),
    ),
    "none": (),
}

#: Headers that tell an attacker what runs behind the gateway; removed unless configured otherwise.
IDENTIFYING_HEADERS = ("server", "x-powered-by", "x-envoy-upstream-service-time")


def _checked_set(values: dict[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, value in values.items():
        key = header_name(name)
        out[key] = None if value is None else header_value(key, value)
    return out


def _checked_append(values: dict[str, str]) -> dict[str, str]:
    return {header_name(n): header_value(n, v) for n, v in values.items()}


def _no_overlap(set_: dict[str, str | None], remove: tuple[str, ...]) -> None:
    both = sorted(n for n in remove if n in set_)
    if both:
        raise ValueError(f"header(s) {both} are both in set and remove; keep one")


class SecurityHeadersOverride(FilterConfig):
    """What changes for the requests ``match`` selects (omitted fields keep the filter's)."""

    match: RouteMatch
    #: Another preset for these routes.
    preset: Preset | None = None
    #: Merged over the filter's ``set`` (same name: this one wins; ``null`` drops a header).
    set: dict[str, str | None] = Field(default_factory=dict)
    #: Merged over the filter's ``append``.
    append: dict[str, str] = Field(default_factory=dict)
    #: Added to the filter's ``remove``.
    remove: tuple[str, ...] = ()
    #: Replaces the filter's list.
    remove_identifying: tuple[str, ...] | None = None
    #: Replaces the filter's ``overwrite``.
    overwrite: bool | None = None

    @field_validator("set")
    @classmethod
    def _set(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        return _checked_set(value)

    @field_validator("append")
    @classmethod
    def _append(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_append(value)

    @field_validator("remove", "remove_identifying")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else header_names(value)

    @model_validator(mode="after")
    def _consistent(self) -> SecurityHeadersOverride:
        _no_overlap(self.set, self.remove)
        return self


class SecurityHeadersConfig(FilterConfig):
    #: ``strict``, ``standard`` or ``none``: the baseline set of security headers.
    preset: Preset = "standard"
    #: Headers to set (added to, or replacing, the preset's); ``null`` drops a preset header.
    set: dict[str, str | None] = Field(default_factory=dict)
    #: Headers to add as one more value, whatever the upstream sent.
    append: dict[str, str] = Field(default_factory=dict)
    #: Headers to remove from every response.
    remove: tuple[str, ...] = ()
    #: Identifying headers to remove (``[]`` keeps them).
    remove_identifying: tuple[str, ...] = IDENTIFYING_HEADERS
    #: Replace a value the upstream already sent for a preset or ``set`` header.
    overwrite: bool = False
    #: Per-route overrides; the first whose ``match`` holds applies.
    routes: list[SecurityHeadersOverride] = Field(default_factory=list)

    @field_validator("set")
    @classmethod
    def _set(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        return _checked_set(value)

    @field_validator("append")
    @classmethod
    def _append(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_append(value)

    @field_validator("remove", "remove_identifying")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return header_names(value)

    @model_validator(mode="after")
    def _consistent(self) -> SecurityHeadersConfig:
        _no_overlap(self.set, self.remove)
        return self


@dataclass(frozen=True)
class _Plan:
    """What one response gets, compiled once from the config."""

    #: Removed first (explicit ``remove`` and identifying headers).
    removes: tuple[str, ...]
    #: Then set: only where absent, or always with ``overwrite``.
    sets: tuple[tuple[str, str], ...]
    #: Then added as one more value.
    appends: tuple[tuple[str, str], ...]
    overwrite: bool


def _plan(
    preset: str,
    set_: dict[str, str | None],
    append: dict[str, str],
    remove: tuple[str, ...],
    identifying: tuple[str, ...],
    overwrite: bool,
) -> _Plan:
    values: dict[str, str | None] = {**dict(PRESETS[preset]), **set_}
    for name in remove:  # an explicit remove also drops the preset's value
        values.pop(name, None)
    sets = tuple((n, v) for n, v in values.items() if v is not None)
    removes = tuple(dict.fromkeys((*remove, *identifying)))
    return _Plan(removes, sets, tuple(append.items()), overwrite)


@dataclass
class SecurityHeadersState:
    plan: _Plan | None = None


class SecurityHeaders(HttpFilter[SecurityHeadersConfig, SecurityHeadersState]):
    """Add security headers to every response and remove identifying ones."""

    name = "security-headers"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        c = self.config
        self._default = _plan(c.preset, c.set, c.append, c.remove, c.remove_identifying, c.overwrite)
        self._plans = {id(o): self._override(o) for o in c.routes}
        plans = (self._default, *self._plans.values())
        #: Read by the Envoy config renderer: Envoy writes ``server: envoy`` after every filter
        #: unless told to pass the header through, which removing or setting it needs.
        self.manages_server_header = any(
            "server" in p.removes or any(n == "server" for n, _ in p.sets) for p in plans
        )

    def _override(self, o: SecurityHeadersOverride) -> _Plan:
        c = self.config
        set_ = {k: v for k, v in c.set.items() if k not in o.remove} | o.set
        remove = tuple(n for n in c.remove if n not in o.set) + o.remove
        return _plan(
            o.preset or c.preset,
            set_,
            c.append | o.append,
            remove,
            c.remove_identifying if o.remove_identifying is None else o.remove_identifying,
            c.overwrite if o.overwrite is None else o.overwrite,
        )

    def on_request_headers(self, request: Request, state: SecurityHeadersState) -> Reply | None:
        override = first_match(self.config.routes, request)
        if override is not None:
            state.plan = self._plans[id(override)]
        return None

    def on_response_headers(self, response: Response, state: SecurityHeadersState) -> Reply | None:
        plan = state.plan or self._default
        headers = response.headers
        for name in plan.removes:
            if name in headers:
                headers.remove(name)
        for name, value in plan.sets:
            if plan.overwrite or name not in headers:
                headers.set(name, value)
        for name, value in plan.appends:
            headers.add(name, value)
        return None
