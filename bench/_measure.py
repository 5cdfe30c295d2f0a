"""One scenario, end to end: upstream, sidecar, Envoy under test, probe, warm-up, wrk, teardown.

A scenario is only measured after one request through Envoy came back 200 (so the sidecar
really answers ext_proc), and a sample is flagged when wrk saw errors or when Envoy's ext_proc
stream counter does not match the requests (a bypassed sidecar would look fast). CPU time of
the Envoy under test and of the sidecar is sampled from /proc over the measured window, to say
where each request's cost goes.

Each sample starts every process afresh; ``run.py`` interleaves scenarios round by round, so
a burst of load from a neighbour on a shared machine hits all of them, not one.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ._cpu import CpuWindow, wait_for_quiet
from ._envoy import (
    CALL_COUNTERS,
    STAT_PREFIX,
    EnvoyHandle,
    http_get,
    jwt_authn_filter,
    proxy_bootstrap,
    start_envoy,
    upstream_bootstrap,
)
from ._procs import BenchError, Pinning
from ._sidecars import SidecarStarted, Unavailable
from ._wrk import WrkResult, run_wrk

__all__ = ["Scenario", "Sample", "Outcome", "RunSettings", "measure_once"]

#: A sample during which other processes used this many cores is flagged as disturbed.
BUSY_NEIGHBOUR_CORES = 0.2

#: Starts a sidecar on ``stack`` for ``work_dir`` pinned to ``cpu``; returns its address.
SidecarStarter = Callable[[contextlib.ExitStack, Path, str | None], SidecarStarted]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    sidecar: SidecarStarter | None = None
    #: Run the no-op chain in-proxy: the Wasm module of ``RunSettings.wasm_module`` in Envoy.
    wasm: bool = False
    #: Instead, run ``RunSettings.wasm_floor_module`` (bare Python callbacks, no SDK).
    wasm_floor: bool = False
    #: How Envoy calls the sidecar: ``ext_proc``, ``ext_authz`` (gRPC) or ``ext_authz_http``.
    mode: str = "ext_proc"
    #: Envoy's native ``jwt_authn`` with the bench provider (``bench/_jwt.py``), no sidecar.
    native_jwt: bool = False
    #: Every request (probe, warm-up, measured window) carries the bench's valid RS256 token.
    jwt_token: bool = False

    @property
    def counter(self) -> str | None:
        """The Envoy counter (under ``http.<prefix>.``) that must count one call per request."""
        if self.native_jwt:
            return CALL_COUNTERS["jwt_authn"]
        return CALL_COUNTERS[self.mode] if self.sidecar is not None else None


@dataclass(frozen=True)
class RunSettings:
    duration_s: float
    warmup_s: float
    connections: int
    repeat: int
    pinning: Pinning
    #: Before each window, wait up to this long for the machine to go quiet (0: do not wait).
    quiet_wait_s: float = 0.0
    keep_logs: Path | None = None
    #: The proxy-wasm module built for this run (``wasm`` scenarios); None when not built.
    wasm_module: Path | None = None
    #: Why there is no module, when its build failed.
    wasm_error: str | None = None
    #: The bare-Python floor module (``wasm_floor`` scenarios), same shim and interpreter.
    wasm_floor_module: Path | None = None


@dataclass(frozen=True)
class Sample:
    """One measured wrk window with the CPU spent by Envoy and the sidecar during it."""

    wrk: WrkResult
    envoy_us_per_req: float
    sidecar_us_per_req: float | None
    #: Calls Envoy made per the scenario's counter (ext_proc streams, ext_authz checks, jwt_authn
    #: allowed) during the window; None when the scenario has no such call.
    ext_proc_streams: int | None
    #: CPU (in cores) used during the window by processes that are not the bench's own.
    others_cores: float
    #: Envoy under test: seconds from process start to admin ``/ready`` answering ``LIVE``.
    envoy_startup_s: float | None = None
    #: Envoy under test: ``VmRSS`` (KiB) right after the measured window.
    envoy_rss_kib: int | None = None


@dataclass
class Outcome:
    """All samples of one scenario; the reported one is the median by req/s."""

    scenario: Scenario
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    def undisturbed(self) -> list[Sample]:
        """Samples during which other processes left the machine (nearly) idle."""
        return [s for s in self.samples if s.others_cores < BUSY_NEIGHBOUR_CORES]

    @property
    def median(self) -> Sample | None:
        """The median by req/s of the undisturbed samples, or of all when none is undisturbed:
        a neighbour only ever slows a sample down, so disturbed ones would bias it low."""
        pool = self.undisturbed() or self.samples
        if not pool:
            return None
        ranked = sorted(pool, key=lambda s: s.wrk.requests_per_s)
        return ranked[len(ranked) // 2]

    @property
    def result(self) -> WrkResult | None:
        median = self.median
        return median.wrk if median else None

    @property
    def notes(self) -> list[str]:
        notes = []
        median = self.median
        if median is not None:
            r = median.wrk
            if not r.clean:
                notes.append(f"errors: {r.non_2xx} non-2xx, {r.socket_errors} socket errors")
            # wrk counts requests finished in the window; streams started can exceed that by
            # the requests in flight at the end, and fall short of it only if Envoy skipped ext_proc.
            if median.ext_proc_streams is not None and median.ext_proc_streams < r.requests * 0.99:
                what = self.scenario.counter or "calls"
                notes.append(f"{what} {median.ext_proc_streams} < requests {r.requests}")
            if median.others_cores >= BUSY_NEIGHBOUR_CORES:
                notes.append(f"other processes used {median.others_cores:.2f} cores during the run")
        pool = self.undisturbed() or self.samples
        if len(self.samples) > 1:
            spread = statistics.pstdev(s.wrk.requests_per_s for s in pool)
            notes.append(f"median of {len(pool)}/{len(self.samples)} samples, req/s stdev {spread:.0f}")
        if self.error and self.samples:
            notes.append(f"a later round failed: {self.error.splitlines()[0]}")
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.key,
            "median": asdict(self.median) if self.median else None,
            "samples": [asdict(s) for s in self.samples],
            "error": self.error,
            "notes": self.notes,
        }


def _probe(proxy: EnvoyHandle, headers: dict[str, str], timeout: float = 10.0) -> None:
    """One request through Envoy must come back 200 before anything is measured."""
    deadline = time.monotonic() + timeout
    status, body = 0, ""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = http_get(proxy.url, headers=headers)
            if status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"probe through Envoy got {status or 'no answer'}: {body.strip()[:200]}")


def _calls(proxy: EnvoyHandle, counter: str) -> int:
    name = f"http.{STAT_PREFIX}.{counter}"
    return proxy.stats(name).get(name, 0)


def _sample(scenario: Scenario, settings: RunSettings, work_dir: Path) -> Sample:
    pin = settings.pinning
    with contextlib.ExitStack() as stack:
        upstream = start_envoy(stack, "upstream", upstream_bootstrap(), work_dir=work_dir, cpu=None)
        sidecar = scenario.sidecar(stack, work_dir, pin.sidecar) if scenario.sidecar else None
        wasm = _wasm_filter(settings, scenario) if scenario.wasm else None
        bootstrap = proxy_bootstrap(
            upstream.listener,
            sidecar.address if sidecar else None,
            wasm,
            mode=scenario.mode,
            native_filter=_native_jwt_filter() if scenario.native_jwt else None,
        )
        # V8 compiles a ~14 MB module at start-up (seconds on this machine): a longer bound.
        timeout = 60.0 if wasm else 20.0
        proxy = start_envoy(stack, "envoy", bootstrap, work_dir=work_dir, cpu=pin.envoy, timeout=timeout)
        headers = _jwt_material().headers if scenario.jwt_token else {}
        _probe(proxy, headers)
        counter = scenario.counter
        if counter is not None and _calls(proxy, counter) == 0:
            raise BenchError(f"probe returned 200 but Envoy's {counter} counter stayed 0")
        wrk = partial(run_wrk, proxy.url, connections=settings.connections, headers=headers)
        if settings.warmup_s > 0:
            wrk(duration_s=settings.warmup_s)

        if settings.quiet_wait_s > 0:
            wait_for_quiet(settings.quiet_wait_s)  # the bench's processes are idle here
        window = CpuWindow([proxy.proc.pid, upstream.proc.pid, *([sidecar.pid] if sidecar else [])])
        calls_before = _calls(proxy, counter) if counter else 0
        window.start()
        result = wrk(duration_s=settings.duration_s)
        window.stop()
        streams = _calls(proxy, counter) - calls_before if counter else None
        if not upstream.proc.alive() or not proxy.proc.alive():
            raise BenchError("an Envoy died during the run")
        rss = proxy.rss_kib()
    n = max(result.requests, 1)
    return Sample(
        wrk=result,
        envoy_us_per_req=window.ours[proxy.proc.pid] * 1e6 / n,
        sidecar_us_per_req=window.ours[sidecar.pid] * 1e6 / n if sidecar else None,
        ext_proc_streams=streams,
        others_cores=window.others_cores,
        envoy_startup_s=proxy.startup_s,
        envoy_rss_kib=rss,
    )


def _jwt_material() -> Any:
    from ._jwt import material

    return material()


def _native_jwt_filter() -> dict[str, Any]:
    """Envoy's ``jwt_authn`` with the same provider block envoykit's ``jwt`` filter gets."""
    from ._jwt import PROVIDER, provider, rules

    return jwt_authn_filter({PROVIDER: provider(_jwt_material().jwks_path)}, rules())


def _wasm_filter(settings: RunSettings, scenario: Scenario) -> dict[str, Any]:
    """The in-proxy no-op chain (the library filter ``noop`` every envoykit module carries), or
    the bare-Python floor module."""
    module = settings.wasm_floor_module if scenario.wasm_floor else settings.wasm_module
    if module is None:
        raise Unavailable(settings.wasm_error or "no Wasm module was built")
    from envoykit.envoyconfig import wasm_filter

    return wasm_filter(str(module), [] if scenario.wasm_floor else [{"filter": "noop"}])


def measure_once(outcome: Outcome, settings: RunSettings) -> None:
    """Add one sample to ``outcome``, or record why there is none; never raises for that."""
    scenario = outcome.scenario
    # A short /tmp path: unix socket paths are limited to 108 bytes.
    work_dir = Path(tempfile.mkdtemp(prefix="ekb-"))
    try:
        outcome.samples.append(_sample(scenario, settings, work_dir))
    except Unavailable as exc:
        outcome.error = f"unavailable: {exc}"
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
    finally:
        if settings.keep_logs is not None:
            dest = settings.keep_logs / scenario.key
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(work_dir, dest, ignore=shutil.ignore_patterns("*.sock"))
        shutil.rmtree(work_dir, ignore_errors=True)
