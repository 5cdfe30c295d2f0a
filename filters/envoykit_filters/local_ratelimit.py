"""Local rate limiting: token buckets at the gateway, no network I/O.

Each rule is a token bucket per *descriptor*: the tuple of values its ``key`` parts take on the
request (client IP, a header, the method, the first path segments, a JWT claim). The bucket holds
``max_tokens``, starts full, and refills ``tokens_per_fill`` every ``fill_interval`` seconds,
continuously (like Envoy's native ``local_ratelimit`` token bucket). Every rule whose ``match``
holds and whose key parts are all present on the request takes one token; if any bucket is empty
the request gets ``429`` with ``retry-after`` and ``RateLimit-Limit/-Remaining/-Reset``.

Buckets live in ``self.shared`` (see ``envoykit.SharedData``): process-wide in the sidecar, and
Envoy's shared data inside Envoy, so every worker's Wasm VM draws from the same bucket. Updates
are compare-and-swap. Time comes from ``clock`` (``time.time``; WASI's realtime clock in Wasm,
which Envoy serves from its own time source), so tests can inject a fake one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator, model_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request, Response

from ._routes import RouteMatch

__all__ = ["KeyPart", "LocalRateLimit", "LocalRateLimitConfig", "LocalRateLimitRule", "LocalRateLimitState"]

#: ``client_ip`` | ``method`` | ``path`` | ``path_segments:N`` | ``header:<name>`` | ``jwt:<claim>``
KeyPart = str
_SIMPLE_PARTS = {"client_ip", "method", "path"}
_TOKEN = frozenset("!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
#: Where the jwt filter leaves the verified token's claims.
JWT_NAMESPACE = "envoykit.jwt"
JWT_KEY = "payload"


def _check_part(part: str) -> str:
    kind, _, arg = part.partition(":")
    if part in _SIMPLE_PARTS:
        return part
    if kind == "header" and arg and all(c in _TOKEN for c in arg):
        return "header:" + arg.lower()
    if kind == "path_segments" and arg.isdigit() and 1 <= int(arg) <= 16:
        return part
    if kind == "jwt" and arg and all(c.isalnum() or c in "_.-" for c in arg):
        return part
    raise ValueError(
        f"{part!r} is not a key part: use client_ip, method, path, path_segments:N (1-16), "
        "header:<name> or jwt:<claim> (dots walk nested claims)"
    )


class LocalRateLimitRule(FilterConfig):
    """One token bucket per distinct value of ``key`` on the requests ``match`` selects."""

    #: Names the rule in metrics and shared-data keys.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    #: What a bucket is per; ``[]`` is one bucket for every request the rule matches.
    key: tuple[str, ...] = ()
    #: Only requests matching this (path prefix, path, host, route name) count; all if unset.
    match: RouteMatch | None = None
    max_tokens: int = Field(ge=1, le=1_000_000_000)
    #: Defaults to ``max_tokens``.
    tokens_per_fill: int | None = Field(default=None, ge=1, le=1_000_000_000)
    #: Seconds between fills (the refill is continuous at tokens_per_fill / fill_interval).
    fill_interval: float = Field(gt=0, le=86_400 * 366)
    #: Count and log, never refuse (overrides the filter-wide setting when set).
    shadow_mode: bool | None = None

    @field_validator("key")
    @classmethod
    def _parts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parts = tuple(_check_part(p) for p in value)
        if len(set(parts)) != len(parts):
            raise ValueError("key parts must be distinct")
        return parts


class LocalRateLimitConfig(FilterConfig):
    rules: tuple[LocalRateLimitRule, ...] = Field(min_length=1)
    #: Count and log over-limit requests but let them through.
    shadow_mode: bool = False
    status: int = Field(429, ge=400, le=599)
    body: str = "rate limited\n"
    #: Also add ``RateLimit-*`` headers to responses that were let through.
    headers_on_success: bool = True

    @model_validator(mode="after")
    def _unique_names(self) -> LocalRateLimitConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self


@dataclass
class LocalRateLimitState:
    #: (limit, remaining, reset seconds) of the tightest bucket the request drew from.
    headers: tuple[int, int, int] | None = None


def _claim(payload: Any, path: str) -> str | None:
    for step in path.split("."):
        if not isinstance(payload, dict) or step not in payload:
            return None
        payload = payload[step]
    if payload is None or isinstance(payload, dict | list):
        return None
    return str(payload).lower() if isinstance(payload, bool) else str(payload)


class _Bucket:
    """A rule compiled for the request path: rates and the descriptor extractor."""

    __slots__ = ("fill_rate", "max_tokens", "rule", "shadow")

    def __init__(self, rule: LocalRateLimitRule, shadow: bool) -> None:
        self.rule = rule
        self.max_tokens = float(rule.max_tokens)
        self.fill_rate = (rule.tokens_per_fill or rule.max_tokens) / rule.fill_interval
        self.shadow = shadow if rule.shadow_mode is None else rule.shadow_mode

    def descriptor(self, request: Request) -> list[str] | None:
        values: list[str] = []
        for part in self.rule.key:
            kind, _, arg = part.partition(":")
            value: str | None
            if kind == "client_ip":
                value = request.attributes.source_address
            elif kind == "method":
                value = request.method
            elif kind == "path":
                value = request.path_only
            elif kind == "path_segments":
                segments = request.path_only.split("/")[1 : int(arg) + 1]
                value = "/" + "/".join(segments)
            elif kind == "header":
                value = request.headers.get(arg)
            else:  # jwt
                value = _claim(request.metadata.read(JWT_NAMESPACE).get(JWT_KEY), arg)
            if value is None:
                return None  # like Envoy's rate-limit actions: a missing part skips the rule
            values.append(value)
        return values


class LocalRateLimit(HttpFilter[LocalRateLimitConfig, LocalRateLimitState]):
    """Token-bucket rate limits per client IP, header, method, path prefix or JWT claim."""

    name = "local-ratelimit"

    #: Seconds since the epoch; replace on an instance to test with a fake clock.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._buckets = tuple(_Bucket(r, self.config.shadow_mode) for r in self.config.rules)
        self._allowed = self.metrics.counter("allowed")
        self._limited = self.metrics.counter("limited")
        self._shadow = self.metrics.counter("shadow_limited")

    def _take(self, key: str, bucket: _Bucket, now: float) -> tuple[bool, float]:
        """Take one token with compare-and-swap; (taken, tokens left)."""
        while True:
            raw, cas = self.shared.get(key)
            tokens = bucket.max_tokens
            if raw:
                stored, _, stamp = raw.decode().partition(" ")
                elapsed = max(0.0, now - float(stamp))
                tokens = min(bucket.max_tokens, float(stored) + elapsed * bucket.fill_rate)
            taken = tokens >= 1.0
            left = tokens - 1.0 if taken else tokens
            if self.shared.set(key, f"{left:.6f} {now:.6f}".encode(), cas):
                return taken, left

    def on_request_headers(self, request: Request, state: LocalRateLimitState) -> Reply | None:
        now = self.clock()
        refused: tuple[_Bucket, float] | None = None
        tightest: tuple[int, int, int] | None = None
        for bucket in self._buckets:
            match = bucket.rule.match
            if match is not None and not match.matches(request):
                continue
            values = bucket.descriptor(request)
            if values is None:
                continue
            key = "rl\x1f" + self.name + "\x1f" + bucket.rule.name + "\x1f" + "\x1f".join(values)
            taken, left = self._take(key, bucket, now)
            remaining = int(left)
            # Seconds until the bucket is full again (RateLimit-Reset), at least 1 when not full.
            reset = (
                math.ceil((bucket.max_tokens - left) / bucket.fill_rate) if left < bucket.max_tokens else 0
            )
            if tightest is None or remaining < tightest[1]:
                tightest = (bucket.rule.max_tokens, remaining, reset)
            if not taken:
                if bucket.shadow:
                    self._shadow.inc()
                    request.metadata["shadow_limited"] = bucket.rule.name
                elif refused is None:
                    refused = (bucket, left)
        state.headers = tightest
        if refused is None:
            self._allowed.inc()
            return None
        bucket, left = refused
        self._limited.inc()
        request.metadata["limited"] = bucket.rule.name
        retry = max(1, math.ceil((1.0 - left) / bucket.fill_rate))
        headers = {
            "retry-after": str(retry),
            "ratelimit-limit": str(bucket.rule.max_tokens),
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(retry),
        }
        state.headers = None  # the reply carries its own
        return Reply(self.config.status, self.config.body, headers, details="envoykit_local_ratelimit")

    def on_response_headers(self, response: Response, state: LocalRateLimitState) -> Reply | None:
        if state.headers is not None and self.config.headers_on_success:
            limit, remaining, reset = state.headers
            response.headers.set("ratelimit-limit", str(limit))
            response.headers.set("ratelimit-remaining", str(remaining))
            response.headers.set("ratelimit-reset", str(reset))
        return None
