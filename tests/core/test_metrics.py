import pytest

from envoykit import Chain, HttpFilter, InMemoryMetrics, MetricKind, NoState, Request
from envoykit.testing import Harness
from envoykit_filters import DenyPaths


def test_library_counter_counts_in_the_harness():
    h = Harness(DenyPaths, {"prefixes": ["/admin"]})
    for path in ("/admin", "/ok", "/admin/x"):
        h.request("GET", path)
    assert h.metric("envoykit.deny_paths.denied") == 2
    assert h.metric("envoykit.deny_paths.nope") == 0


class Sized(HttpFilter):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.size = self.metrics.histogram("path_len")
        self.inflight = self.metrics.gauge("inflight")

    def on_request_headers(self, request: Request, state: NoState) -> None:
        self.size.record(len(request.path))
        self.inflight.add(1)


def test_histograms_gauges_and_rebinding_to_a_runtime_backend():
    flt = Sized()
    Harness(flt).request("GET", "/abc")
    local = flt.metrics.backend
    assert isinstance(local, InMemoryMetrics)
    assert local.recorded("envoykit.sized.path_len") == [4]
    runtime = InMemoryMetrics()
    Chain([flt]).bind_metrics(runtime)  # what the sidecar / Wasm runtime does
    Harness(flt).request("GET", "/abcdef")
    assert runtime.recorded("envoykit.sized.path_len") == [7]
    assert runtime.value("envoykit.sized.inflight") == 1
    assert runtime.kinds[runtime.names.index("envoykit.sized.inflight")] is MetricKind.GAUGE


def test_metric_names_and_kinds_are_checked():
    flt = Sized()
    with pytest.raises(ValueError, match="lower-case"):
        flt.metrics.counter("Bad-Name")
    with pytest.raises(ValueError, match="already exists as a histogram"):
        flt.metrics.counter("path_len")
    with pytest.raises(ValueError, match="only goes up"):
        flt.metrics.counter("c").inc(-1)
