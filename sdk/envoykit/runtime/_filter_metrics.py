"""Filters' own metrics (``self.metrics.counter(...)``) as Prometheus series of the sidecar.

``envoykit.deny_paths.denied`` becomes ``envoykit_deny_paths_denied_total`` (counter),
``..._x`` a gauge, or a histogram with ``_bucket``/``_sum``/``_count``; values live in plain
lists (the hot path is one list update) and a collector reports them at scrape time, like the
sidecar's other metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._metrics import InMemoryMetrics, MetricKind

__all__ = ["PrometheusFilterMetrics"]

#: Buckets for filter histograms: values are whatever the filter records (bytes, ms, items).
_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000)


class PrometheusFilterMetrics(InMemoryMetrics, Collector):
    """A ``MetricsBackend`` for ``Chain.bind_metrics`` that exports to ``registry``.

    Counters and gauges are kept exactly as in ``InMemoryMetrics``; histograms keep bucket
    counts (plus sum and count) instead of every sample, so memory stays bounded.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.buckets: list[list[int]] = []  # per metric: bucket counts, +Inf, sum, count
        registry.register(self)

    def define(self, kind: MetricKind, name: str) -> int:
        metric_id = super().define(kind, name)
        while len(self.buckets) < len(self.names):
            self.buckets.append([0] * (len(_BUCKETS) + 3))
        return metric_id

    def record(self, metric_id: int, value: int) -> None:
        counts = self.buckets[metric_id]
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                counts[i] += 1
        counts[len(_BUCKETS)] += 1  # +Inf
        counts[-2] += value
        counts[-1] += 1

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for name, kind, value, samples in zip(self.names, self.kinds, self.values, self.buckets, strict=True):
            prom = name.replace(".", "_").replace("-", "_")
            if kind is MetricKind.COUNTER:
                yield CounterMetricFamily(prom, f"filter metric {name}", value=value)
            elif kind is MetricKind.GAUGE:
                yield GaugeMetricFamily(prom, f"filter metric {name}", value=value)
            else:
                buckets = [(f"{b:g}", samples[i]) for i, b in enumerate(_BUCKETS)]
                buckets.append(("+Inf", samples[len(_BUCKETS)]))
                yield HistogramMetricFamily(
                    prom, f"filter metric {name}", buckets=buckets, sum_value=samples[-2]
                )
