"""Run ``wrk --latency`` against a loopback URL and parse req/s, p50, p99 and errors.

wrk (no Lua script) prints its latency distribution with ``--latency``; those percentiles are
measured per request by wrk itself (HdrHistogram), which is what a client sees. Errors are
parsed too: with ``failure_mode_allow: false`` a broken sidecar turns into fast 500s, and a
fast error must never pass for throughput.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from ._procs import BenchError

__all__ = ["WrkResult", "run_wrk", "parse_wrk", "wrk_argv"]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def clean(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0 and self.requests > 0


def wrk_argv(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk not found (Debian package `wrk`)")
    threads = max(1, min(threads, connections))
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    return [
        binary,
        "--latency",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "5s",
        *extra,
        url,
    ]


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise BenchError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text report (``--latency``); raises ``BenchError`` naming what is missing."""

    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, flags=re.MULTILINE)

    rps = find(r"^Requests/sec:\s+([\d.]+)")
    p50 = find(r"^\s+50%\s+(\S+)")
    p99 = find(r"^\s+99%\s+(\S+)")
    total = find(r"^\s+(\d+) requests in ")
    if rps is None or p50 is None or p99 is None or total is None:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    non_2xx = find(r"^\s+Non-2xx or 3xx responses:\s+(\d+)")
    sock = find(r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=_latency_ms(p50.group(1)),
        p99_ms=_latency_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
    )


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """One wrk window; ``headers`` go on every request (``-H``, e.g. a bearer token)."""
    argv = wrk_argv(url, duration_s=duration_s, connections=connections, threads=threads, headers=headers)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish within {duration_s + 30:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout)
