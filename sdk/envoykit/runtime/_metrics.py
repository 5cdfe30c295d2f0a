"""Prometheus metrics for sidecar runtimes, fed by the chain engine's ``ChainObserver`` seam.

Every hook run reports to ``SidecarMetrics.hook_done``; the runtime adds stream-level counts
(streams per chain, local replies, stream errors). Label children are cached per label tuple:
``Counter.labels(...)`` costs a lock and a dict build per call, and it sits on the hot path.
Each server gets its own ``CollectorRegistry`` unless one is passed, so several servers (tests,
ext_proc next to ext_authz) can live in one process without duplicate-metric errors.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

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

_HookChildren = tuple[Counter, Counter, Histogram]


class SidecarMetrics:
    """The metrics of one sidecar server; also the ``ChainObserver`` of its chains."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        labels = ("chain", "filter", "phase")
        self.filter_calls = Counter(
            "envoykit_filter_calls", "Filter hook runs.", labels, registry=self.registry
        )
        self.filter_errors = Counter(
            "envoykit_filter_errors", "Filter hooks that raised.", labels, registry=self.registry
        )
        self.filter_duration = Histogram(
            "envoykit_filter_duration_seconds",
            "Time spent in one filter hook (async hooks include their awaits).",
            labels,
            registry=self.registry,
            buckets=HOOK_BUCKETS,
        )
        self.streams = Counter(
            "envoykit_streams",
            "Requests (ext_proc streams) started, by chain.",
            ("chain",),
            registry=self.registry,
        )
        self.local_replies = Counter(
            "envoykit_local_replies",
            "Requests answered by a filter instead of the upstream.",
            ("chain", "status"),
            registry=self.registry,
        )
        self.stream_errors = Counter(
            "envoykit_stream_errors",
            "Streams the runtime could not process (unknown chain, internal error).",
            ("reason",),
            registry=self.registry,
        )
        self._hooks: dict[tuple[str, str, Phase], _HookChildren] = {}
        self._streams: dict[str, Counter] = {}
        self._replies: dict[tuple[str, int], Counter] = {}
        self._errors: dict[str, Counter] = {}

    # -- ChainObserver ------------------------------------------------------------------------
    def hook_done(self, chain: str, filter_name: str, phase: Phase, seconds: float, failed: bool) -> None:
        children = self._hooks.get((chain, filter_name, phase))
        if children is None:
            children = self._hook_children(chain, filter_name, phase)
        children[0].inc()
        children[2].observe(seconds)
        if failed:
            children[1].inc()

    def _hook_children(self, chain: str, filter_name: str, phase: Phase) -> _HookChildren:
        label = (chain, filter_name, phase.value)
        children = (
            self.filter_calls.labels(*label),
            self.filter_errors.labels(*label),
            self.filter_duration.labels(*label),
        )
        self._hooks[(chain, filter_name, phase)] = children
        return children

    # -- stream level -------------------------------------------------------------------------
    def stream_started(self, chain: str) -> None:
        child = self._streams.get(chain)
        if child is None:
            child = self._streams[chain] = self.streams.labels(chain)
        child.inc()

    def local_reply(self, chain: str, status: int) -> None:
        child = self._replies.get((chain, status))
        if child is None:
            child = self._replies[(chain, status)] = self.local_replies.labels(chain, str(status))
        child.inc()

    def stream_error(self, reason: str) -> None:
        child = self._errors.get(reason)
        if child is None:
            child = self._errors[reason] = self.stream_errors.labels(reason)
        child.inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): handy in tests and health reports."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


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
