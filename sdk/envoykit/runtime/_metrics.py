"""Prometheus metrics for sidecar runtimes, fed by the chain engine's ``ChainObserver`` seam.

Every hook run reports to ``SidecarMetrics.hook_done``; the runtime adds stream-level counts
(streams per chain, local replies, stream errors). This sits on the hot path (one call per hook
per request), so the numbers live in plain Python objects updated without locks (the event loop
is the only writer) and a custom collector turns them into Prometheus samples at scrape time.
That is about 0.3 µs per hook instead of ~3 µs through ``Counter.labels(...).inc()``.

Each server gets its own ``CollectorRegistry`` unless one is passed, so several servers (tests,
ext_proc next to ext_authz) can live in one process without duplicate-metric errors.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .._errors import ConfigError
from .._phases import Phase
from ._address import parse_listen_address

__all__ = ["SidecarMetrics", "MetricsEndpoint", "HOOK_BUCKETS"]

log = logging.getLogger("envoykit.runtime")

#: Hook durations: most hooks are microseconds, I/O hooks (JWKS, Redis) milliseconds.
HOOK_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BUCKET_LABELS = (*(f"{b:g}" for b in HOOK_BUCKETS), "+Inf")
_HOOK_LABELS = ("chain", "filter", "phase")


class _HookStats:
    """Counts for one (chain, filter, phase): calls, errors, and the duration histogram."""

    __slots__ = ("buckets", "calls", "errors", "labels", "total")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.calls = 0
        self.errors = 0
        self.total = 0.0
        self.buckets = [0] * (len(HOOK_BUCKETS) + 1)  # per bucket, not cumulative; last = +Inf


class SidecarMetrics(Collector):
    """The metrics of one sidecar server; also the ``ChainObserver`` of its chains.

    Samples: ``envoykit_filter_calls_total``, ``envoykit_filter_errors_total`` and
    ``envoykit_filter_duration_seconds`` by ``{chain, filter, phase}``;
    ``envoykit_streams_total{chain}``, ``envoykit_local_replies_total{chain, status}`` and
    ``envoykit_stream_errors_total{reason}``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._hooks: dict[tuple[str, str, Phase], _HookStats] = {}
        self._streams: dict[str, int] = {}
        self._replies: dict[tuple[str, str], int] = {}
        self._errors: dict[str, int] = {}
        self.registry.register(self)

    # -- ChainObserver ------------------------------------------------------------------------
    def hook_done(self, chain: str, filter_name: str, phase: Phase, seconds: float, failed: bool) -> None:
        stats = self._hooks.get((chain, filter_name, phase))
        if stats is None:
            stats = self._hooks[(chain, filter_name, phase)] = _HookStats((chain, filter_name, phase.value))
        stats.calls += 1
        stats.total += seconds
        stats.buckets[bisect_left(HOOK_BUCKETS, seconds)] += 1
        if failed:
            stats.errors += 1

    # -- stream level -------------------------------------------------------------------------
    def stream_started(self, chain: str) -> None:
        self._streams[chain] = self._streams.get(chain, 0) + 1

    def local_reply(self, chain: str, status: int) -> None:
        key = (chain, str(status))
        self._replies[key] = self._replies.get(key, 0) + 1

    def stream_error(self, reason: str) -> None:
        self._errors[reason] = self._errors.get(reason, 0) + 1

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): handy in tests and health reports."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    # -- Collector (runs in the scraping thread; list() snapshots are atomic under the GIL) ----
    def describe(self) -> list[Metric]:
        return list(self._families([], [], [], []))

    def collect(self) -> Iterator[Metric]:
        return self._families(
            list(self._hooks.values()),
            list(self._streams.items()),
            list(self._replies.items()),
            list(self._errors.items()),
        )

    def _families(
        self,
        hooks: list[_HookStats],
        streams: list[tuple[str, int]],
        replies: list[tuple[tuple[str, str], int]],
        errors: list[tuple[str, int]],
    ) -> Iterator[Metric]:
        calls = CounterMetricFamily("envoykit_filter_calls", "Filter hook runs.", labels=_HOOK_LABELS)
        failed = CounterMetricFamily(
            "envoykit_filter_errors", "Filter hooks that raised.", labels=_HOOK_LABELS
        )
        duration = HistogramMetricFamily(
            "envoykit_filter_duration_seconds",
            "Time spent in one filter hook (async hooks include their awaits).",
            labels=_HOOK_LABELS,
        )
        for stats in hooks:
            calls.add_metric(stats.labels, stats.calls)
            failed.add_metric(stats.labels, stats.errors)
            cumulative, running = [], 0
            for label, count in zip(_BUCKET_LABELS, list(stats.buckets), strict=True):
                running += count
                cumulative.append((label, float(running)))
            duration.add_metric(stats.labels, cumulative, stats.total)
        yield calls
        yield failed
        yield duration
        family = CounterMetricFamily(
            "envoykit_streams", "Requests (ext_proc streams) started.", labels=("chain",)
        )
        for chain, count in streams:
            family.add_metric((chain,), count)
        yield family
        family = CounterMetricFamily(
            "envoykit_local_replies",
            "Requests answered by a filter instead of the upstream.",
            labels=("chain", "status"),
        )
        for labels, count in replies:
            family.add_metric(labels, count)
        yield family
        family = CounterMetricFamily(
            "envoykit_stream_errors",
            "Streams the runtime could not process (unknown chain, internal or protocol error).",
            labels=("reason",),
        )
        for reason, count in errors:
            family.add_metric((reason,), count)
        yield family


class MetricsEndpoint:
    """The ``/metrics`` HTTP endpoint (prometheus-client's WSGI server in a daemon thread)."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        self.registry = registry
        self.address = parse_listen_address(address, field="metrics_address")
        if self.address.is_unix:
            raise ConfigError(
                "the metrics endpoint needs host:port, not a unix socket", field="metrics_address"
            )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        #: The bound port (after ``start``), useful with port 0.
        self.port = 0

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self.address.port, self.address.host, registry=self.registry
        )
        self.port = int(self._server.server_address[1])
        log.info("metrics on http://%s/metrics", self.address.with_port(self.port))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
