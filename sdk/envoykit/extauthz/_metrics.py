"""ext_authz decision counts: ``envoykit_authz_decisions_total{chain, decision, filter}``.

Per-filter hook metrics come from the shared ``SidecarMetrics`` (the chains' observer); this adds
the one number ext_authz operators watch: allows and denies, and which filter denied.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["AuthzMetrics"]


class AuthzMetrics(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        registry.register(self)

    @classmethod
    def shared(cls, registry: CollectorRegistry) -> AuthzMetrics:
        """The one instance of ``registry`` (the gRPC and HTTP servers of a process share it)."""
        with _LOCK:
            metrics = _SHARED.get(registry)
            if metrics is None:
                metrics = _SHARED[registry] = cls(registry)
            return metrics

    def decided(self, chain: str, decision: str, filter_name: str) -> None:
        key = (chain, decision, filter_name)
        self._counts[key] = self._counts.get(key, 0) + 1

    def describe(self) -> list[Metric]:
        return list(self._families([]))

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._counts.items()))

    def _families(self, counts: list[tuple[tuple[str, str, str], int]]) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "envoykit_authz_decisions",
            "ext_authz decisions by chain, decision (allow/deny) and deciding filter.",
            labels=("chain", "decision", "filter"),
        )
        for labels, count in counts:
            family.add_metric(labels, count)
        yield family


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, AuthzMetrics] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
