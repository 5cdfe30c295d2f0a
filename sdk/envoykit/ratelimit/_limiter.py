"""Decisions: a domain, descriptors and hits in; a code per descriptor, an overall code and
RateLimit headers out. No gRPC here (the servicer in ``_server`` adapts), time is injected.

Semantics follow envoyproxy/ratelimit: every descriptor is matched on its own; ``unlimited``
limits never touch the backend and report ``limit_remaining`` 4294967295; a limit whose ``name``
is in another matched limit's ``replaces`` is dropped; the fixed window counts
``INCRBY domain_key_value_..._<window start>`` and is over limit once the count passes
``requests_per_unit``; near limit is above 80 % of it; ``shadow_mode`` turns OVER_LIMIT into OK
and counts it; the overall code is OVER_LIMIT if any descriptor is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client.core import CounterMetricFamily, Metric

from ._backends import Backend, BackendError, Hit
from ._config import DomainConfig, RateLimitRule

__all__ = ["Algorithm", "Decision", "DescriptorResult", "Limiter", "LimiterStats", "MAX_UINT32"]

log = logging.getLogger("envoykit.ratelimit")

MAX_UINT32 = 2**32 - 1
NEAR_LIMIT_RATIO = 0.8
Algorithm = Literal["fixed", "sliding"]
Entries = Sequence[tuple[str, str]]
Key = tuple[tuple[str, str], ...]
#: One call of a batch: (domain, descriptors, hits_addend, overrides).
Call = tuple[str, Sequence[Entries], int, Sequence[tuple[int, str] | None] | None]


@dataclass(frozen=True, slots=True)
class DescriptorResult:
    over_limit: bool
    #: The limit that applied (None: no rule matched, or unlimited).
    limit: RateLimitRule | None
    remaining: int
    #: Seconds until the window resets.
    reset: int


@dataclass(slots=True)
class Decision:
    over_limit: bool
    results: list[DescriptorResult]
    headers: list[tuple[str, str]] = field(default_factory=list)


class LimiterStats:
    """Counters per descriptor stats key (``domain.key_value``), read by Prometheus at scrape."""

    KINDS = ("total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode")

    def __init__(self) -> None:
        self.by_key: dict[str, list[int]] = {}
        self.backend_errors = 0

    def add(self, key: str, kind: int, n: int) -> None:
        counts = self.by_key.get(key)
        if counts is None:
            counts = self.by_key[key] = [0] * len(self.KINDS)
        counts[kind] += n

    def get(self, key: str, kind: str) -> int:
        return self.by_key.get(key, [0] * len(self.KINDS))[self.KINDS.index(kind)]

    def collect(self) -> Iterator[Metric]:
        for i, kind in enumerate(self.KINDS):
            family = CounterMetricFamily(
                f"envoykit_ratelimit_{kind}",
                f"Rate-limit {kind.replace('_', ' ')} per descriptor",
                labels=["descriptor"],
            )
            for key, counts in self.by_key.items():
                family.add_metric([key], counts[i])
            yield family
        errors = CounterMetricFamily(
            "envoykit_ratelimit_backend_errors", "Backend calls that failed or timed out"
        )
        errors.add_metric([], self.backend_errors)
        yield errors


_TOTAL, _OVER, _NEAR, _WITHIN, _SHADOW = range(5)
#: Bound of the memoised descriptor keys (cleared when full: request values are unbounded).
_CACHE_SIZE = 50_000
_NO_LIMIT = DescriptorResult(False, None, 0, 0)
_UNLIMITED = DescriptorResult(False, None, MAX_UINT32, 0)


class Limiter:
    """Rate-limit decisions against a config snapshot and a backend.

    - ``algorithm``: ``fixed`` (envoyproxy/ratelimit's windows) or ``sliding`` (the previous
      window's count weighted by how much of it still overlaps the sliding window);
    - ``failure_mode``: when the backend fails, ``open`` allows, ``closed`` refuses every
      descriptor that has a limit;
    - ``shadow_mode``: global shadow mode, every decision is OK (stats still count);
    - ``key_prefix``: prepended to every backend key.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        algorithm: Algorithm = "fixed",
        failure_mode: Literal["open", "closed"] = "open",
        shadow_mode: bool = False,
        key_prefix: str = "",
        clock: Callable[[], float] = time.time,
        stats: LimiterStats | None = None,
    ) -> None:
        self.backend = backend
        self.algorithm = algorithm
        self.failure_mode = failure_mode
        self.shadow_mode = shadow_mode
        self.key_prefix = key_prefix
        self.clock = clock
        self.stats = stats or LimiterStats()
        self._lock = threading.Lock()
        #: (domain, entries) -> the backend key's hash-tagged part.
        self._tags: dict[tuple[str, Key], str] = {}

    def decide(
        self,
        config: Mapping[str, DomainConfig],
        domain: str,
        descriptors: Sequence[Entries],
        hits_addend: int = 1,
        overrides: Sequence[tuple[int, str] | None] | None = None,
    ) -> Decision:
        """``overrides[i]``: a (requests_per_unit, unit) the client sent for descriptor ``i``.

        Thread-safe: counters are the backend's business, the stats update holds a lock. The
        matching rule and backend key of a descriptor are memoised per config snapshot.
        """
        return self.decide_batch(config, [(domain, descriptors, hits_addend, overrides)])[0]

    def decide_batch(self, config: Mapping[str, DomainConfig], calls: Sequence[Call]) -> list[Decision]:
        """Several calls at once, in order, with ONE backend round trip for all of them (one
        Redis pipeline): each call is decided exactly as ``decide`` would, and hits on the same
        counter in one batch are counted one after the other, in call order."""
        now = self.clock()
        plans = []
        hits: list[Hit] = []
        for domain, descriptors, hits_addend, overrides in calls:
            limits, first = self._plan(config, domain, descriptors, hits_addend, overrides, now, hits)
            plans.append((limits, first, hits_addend))
        counts: list[tuple[int, int]] | None = None
        if hits:
            try:
                counts = self.backend.hit(hits)
            except BackendError as exc:
                log.warning("rate-limit backend failed (failing %s): %s", self.failure_mode, exc)
        failed = bool(hits) and counts is None
        out = []
        with self._lock:
            for limits, first, hits_addend in plans:
                limited = any(r is not None and not r.unlimited for r in limits)
                out.append(self._finish(limits, counts, first, hits_addend, now, failed and limited))
        return out

    def _plan(
        self,
        config: Mapping[str, DomainConfig],
        domain: str,
        descriptors: Sequence[Entries],
        hits_addend: int,
        overrides: Sequence[tuple[int, str] | None] | None,
        now: float,
        hits: list[Hit],
    ) -> tuple[list[RateLimitRule | None], int]:
        """The rule of every descriptor; appends the backend hits to ``hits`` and returns where
        this call's hits start."""
        keys: list[Key] = [e if type(e) is tuple else tuple(e) for e in descriptors]
        domain_config = config.get(domain)
        limits: list[RateLimitRule | None] = []
        for i, entries in enumerate(keys):
            rule = domain_config.find_cached(entries) if domain_config is not None else None
            override = overrides[i] if overrides else None
            if override is not None:
                key = domain + "." + ".".join(f"{k}_{v}" for k, v in entries)
                rule = RateLimitRule(key, override[0], override[1])
            limits.append(rule)
        replaced = {
            name for rule in limits if rule is not None and not rule.unlimited for name in rule.replaces
        }
        if replaced:
            limits = [None if r is not None and r.name and r.name in replaced else r for r in limits]

        first = len(hits)
        second = int(now)
        sliding = self.algorithm == "sliding"
        tags = self._tags
        for entries, rule in zip(keys, limits, strict=True):
            if rule is None or rule.unlimited:
                continue
            window = rule.window
            start = second // window * window
            tag = tags.get((domain, entries))
            if tag is None:
                if len(tags) >= _CACHE_SIZE:
                    tags.clear()
                tag = self.key_prefix + "{" + domain + "_" + "".join(f"{k}_{v}_" for k, v in entries) + "}"
                tags[(domain, entries)] = tag
            if sliding:
                hits.append(Hit(tag + str(start), tag + str(start - window), hits_addend, window * 2))
            else:
                hits.append(Hit(tag + str(start), None, hits_addend, window))
        return limits, first

    def _finish(
        self,
        limits: list[RateLimitRule | None],
        counts: list[tuple[int, int]] | None,
        j: int,
        hits_addend: int,
        now: float,
        failed: bool,
    ) -> Decision:
        """The decision from the backend's counts (``counts[j:]`` are this call's); lock held."""
        results: list[DescriptorResult] = []
        second = int(now)
        sliding = self.algorithm == "sliding"
        stats = self.stats
        if failed:
            stats.backend_errors += 1
        for rule in limits:
            if rule is None:
                results.append(_NO_LIMIT)
                continue
            if rule.unlimited:
                results.append(_UNLIMITED)
                continue
            stats.add(rule.full_key, _TOTAL, hits_addend)
            window = rule.window
            reset = window - second % window
            if counts is None:
                over = self.failure_mode == "closed"
                results.append(DescriptorResult(over, rule, 0 if over else rule.requests_per_unit, reset))
                j += 1
                continue
            after, earlier = counts[j]
            j += 1
            if sliding:
                elapsed = (now % window) / window
                after += math.floor(earlier * (1.0 - elapsed))
            results.append(self._judge(rule, after, hits_addend, reset))

        over_limit = not self.shadow_mode and any(r.over_limit for r in results)
        return Decision(over_limit, results, _headers(results, over_limit))

    def _judge(self, rule: RateLimitRule, after: int, hits: int, reset: int) -> DescriptorResult:
        """envoyproxy/ratelimit's over/near/within accounting for one descriptor."""
        limit = rule.requests_per_unit
        before = after - hits
        near = math.floor(limit * NEAR_LIMIT_RATIO)
        key = rule.full_key
        if after > limit:
            if before >= limit:
                self.stats.add(key, _OVER, hits)
            else:
                self.stats.add(key, _OVER, after - limit)
                self.stats.add(key, _NEAR, limit - max(near, before))
            if rule.shadow_mode or self.shadow_mode:
                self.stats.add(key, _SHADOW, hits)
                return DescriptorResult(False, rule, 0, reset)
            return DescriptorResult(True, rule, 0, reset)
        if after > near:
            self.stats.add(key, _NEAR, after - max(near, before))
        self.stats.add(key, _WITHIN, hits)
        return DescriptorResult(False, rule, limit - after, reset)


def _headers(results: list[DescriptorResult], over_limit: bool) -> list[tuple[str, str]]:
    """RateLimit-* of the tightest limited descriptor (the one with the fewest requests left)."""
    tightest: DescriptorResult | None = None
    for r in results:
        if r.limit is None:
            continue
        if tightest is None or (r.over_limit, -r.remaining) > (tightest.over_limit, -tightest.remaining):
            tightest = r
    if tightest is None or tightest.limit is None:
        return []
    headers = [
        ("ratelimit-limit", str(tightest.limit.requests_per_unit)),
        ("ratelimit-remaining", str(tightest.remaining)),
        ("ratelimit-reset", str(tightest.reset)),
    ]
    if over_limit:
        headers.append(("retry-after", str(tightest.reset)))
    return headers
