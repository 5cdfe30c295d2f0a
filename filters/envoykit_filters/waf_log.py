"""Log the headers a WAF in front of the gateway adds to back-to-origin requests.

Configured request headers (exact names and/or prefixes) are copied into the filter's dynamic
metadata, ``{"headers": {name: value}}``, which the rendered JSON access log prints
(``%DYNAMIC_METADATA(envoykit.waf-log)%`` in the sidecar, Wasm filter state in-proxy). Secrets
are redacted, the number of headers and each value's length are capped, and ``strip`` keeps
the captured headers from the upstream.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from envoykit import FilterConfig, HttpFilter, NoState, Reply, Request

from ._header_names import header_names, header_value

__all__ = ["WafLog", "WafLogConfig"]


class WafLogConfig(FilterConfig):
    #: Request headers to capture by exact name.
    headers: tuple[str, ...] = ("x-forwarded-for", "x-real-ip", "x-request-id")
    #: Request headers to capture by name prefix.
    prefixes: tuple[str, ...] = ("x-waf-",)
    #: Captured headers whose value is replaced by ``redacted_value`` (never truncated).
    redact: tuple[str, ...] = ("authorization", "proxy-authorization", "cookie", "set-cookie")
    redacted_value: str = "[redacted]"
    #: At most this many headers are captured per request (the rest are counted as dropped).
    max_headers: int = Field(32, ge=1, le=1000)
    #: Longer values are cut to this many characters and ``truncation_marker`` is appended.
    max_value_length: int = Field(256, ge=1, le=65536)
    truncation_marker: str = "...[truncated]"
    #: Remove every matching header before the upstream sees it.
    strip: bool = False

    @field_validator("headers", "redact")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return header_names(value)

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # A prefix is the start of a name: checked as one ("x-waf-" is a valid token).
        return header_names(value)

    @field_validator("redacted_value", "truncation_marker")
    @classmethod
    def _value(cls, value: str) -> str:
        return header_value("value", value)

    @model_validator(mode="after")
    def _something(self) -> WafLogConfig:
        if not self.headers and not self.prefixes:
            raise ValueError("give at least one of headers or prefixes")
        return self


class WafLog(HttpFilter[WafLogConfig, NoState]):
    """Capture WAF-added request headers into dynamic metadata for the access log."""

    name = "waf-log"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        c = self.config
        self._exact = frozenset(c.headers)
        self._prefixes = c.prefixes
        self._redact = frozenset(c.redact)
        self._captured = self.metrics.counter("captured")
        self._truncated = self.metrics.counter("truncated")
        self._dropped = self.metrics.counter("dropped")

    def _wanted(self, name: str) -> bool:
        return name in self._exact or name.startswith(self._prefixes)

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        c = self.config
        values: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            if name[0] != ":" and self._wanted(name):
                values.setdefault(name, []).append(value)
        if not values:
            return None
        captured: dict[str, str] = {}
        truncated = dropped = 0
        for name, parts in values.items():
            if len(captured) == c.max_headers:
                dropped += 1
                continue
            if name in self._redact:
                captured[name] = c.redacted_value
                continue
            value = ", ".join(parts)
            if len(value) > c.max_value_length:
                value = value[: c.max_value_length] + c.truncation_marker
                truncated += 1
            captured[name] = value
        if c.strip:
            for name in values:
                request.headers.remove(name)
        request.metadata["headers"] = captured
        if truncated:
            request.metadata["truncated"] = truncated
            self._truncated.inc(truncated)
        if dropped:
            request.metadata["dropped"] = dropped
            self._dropped.inc(dropped)
        self._captured.inc(len(captured))
        return None
