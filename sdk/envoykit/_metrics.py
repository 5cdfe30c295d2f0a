"""Filter-defined metrics: counters, gauges and histograms a filter updates per request.

A filter asks for its metrics once (``self.metrics.counter("denied")``, ideally in ``__init__``)
and updates them per request. Where the numbers go is the placement's business: the sidecar
exports them to Prometheus, a Wasm module defines them in Envoy (``/stats`` shows
``wasmcustom.envoykit.<filter>.<name>``), the test harness keeps them in memory. A runtime
swaps the backend with ``Chain.bind_metrics``; handles created before stay valid.
"""

from __future__ import annotations

import enum
import re
from typing import Protocol, TypeVar

__all__ = [
    "MetricKind",
    "MetricsBackend",
    "InMemoryMetrics",
    "FilterMetrics",
    "Counter",
    "Gauge",
    "Histogram",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MetricKind(enum.Enum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class MetricsBackend(Protocol):
    """Where metric updates go; ``name`` is the full dotted name (``envoykit.<filter>.<metric>``)."""

    def define(self, kind: MetricKind, name: str) -> int: ...

    def add(self, metric_id: int, delta: int) -> None: ...

    def set(self, metric_id: int, value: int) -> None: ...

    def record(self, metric_id: int, value: int) -> None: ...


class InMemoryMetrics:
    """The default backend: values readable by name (what the test harness shows)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.kinds: list[MetricKind] = []
        self.values: list[int] = []
        self.samples: list[list[int]] = []

    def define(self, kind: MetricKind, name: str) -> int:
        if name in self.names:
            return self.names.index(name)
        self.names.append(name)
        self.kinds.append(kind)
        self.values.append(0)
        self.samples.append([])
        return len(self.names) - 1

    def add(self, metric_id: int, delta: int) -> None:
        self.values[metric_id] += delta

    def set(self, metric_id: int, value: int) -> None:
        self.values[metric_id] = value

    def record(self, metric_id: int, value: int) -> None:
        self.samples[metric_id].append(value)

    def value(self, name: str) -> int:
        """A counter's or gauge's current value (0 if never defined)."""
        return self.values[self.names.index(name)] if name in self.names else 0

    def recorded(self, name: str) -> list[int]:
        return list(self.samples[self.names.index(name)]) if name in self.names else []


class _Metric:
    __slots__ = ("_id", "_kind", "_owner", "name")

    def __init__(self, owner: FilterMetrics, kind: MetricKind, name: str) -> None:
        self._owner = owner
        self._kind = kind
        self.name = name
        self._id = owner._backend.define(kind, name)

    def _rebind(self) -> None:
        self._id = self._owner._backend.define(self._kind, self.name)


class Counter(_Metric):
    __slots__ = ()

    def inc(self, amount: int = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self._owner._backend.add(self._id, amount)


class Gauge(_Metric):
    __slots__ = ()

    def set(self, value: int) -> None:
        self._owner._backend.set(self._id, value)

    def add(self, delta: int) -> None:
        self._owner._backend.add(self._id, delta)


class Histogram(_Metric):
    __slots__ = ()

    def record(self, value: int) -> None:
        self._owner._backend.record(self._id, value)


_M = TypeVar("_M", bound=_Metric)


class FilterMetrics:
    """A filter's metrics, all named ``envoykit.<filter name>.<name>``."""

    def __init__(self, prefix: str, backend: MetricsBackend | None = None) -> None:
        self.prefix = prefix
        self._backend: MetricsBackend = backend or InMemoryMetrics()
        self._metrics: dict[str, _Metric] = {}

    def counter(self, name: str) -> Counter:
        return self._get(Counter, MetricKind.COUNTER, name)

    def gauge(self, name: str) -> Gauge:
        return self._get(Gauge, MetricKind.GAUGE, name)

    def histogram(self, name: str) -> Histogram:
        return self._get(Histogram, MetricKind.HISTOGRAM, name)

    def _get(self, cls: type[_M], kind: MetricKind, name: str) -> _M:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r}: use lower-case letters, digits and _")
        full = f"{self.prefix}.{name}"
        existing = self._metrics.get(full)
        if existing is not None:
            if not isinstance(existing, cls):
                raise ValueError(f"metric {full} already exists as a {type(existing).__name__.lower()}")
            return existing
        metric = cls(self, kind, full)
        self._metrics[full] = metric
        return metric

    def bind(self, backend: MetricsBackend) -> None:
        """Send this filter's metrics to ``backend`` from now on (runtimes call this)."""
        self._backend = backend
        for metric in self._metrics.values():
            metric._rebind()

    @property
    def backend(self) -> MetricsBackend:
        return self._backend
