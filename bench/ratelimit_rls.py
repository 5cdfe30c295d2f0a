"""``make bench`` (rate-limit part): decisions/s of ``envoykit ratelimit serve`` on one core, with
Redis and in memory, against the bare grpcio floor, and the latency a decision adds.

Usage (from the repository root)::

    .venv/bin/python bench/ratelimit_rls.py [--duration S] [--repeat N]
        [--scenarios floor,memory,redis,redis-sliding,h2-floor,h2-memory,h2-redis,h2-redis-sliding]
        [--results bench/RESULTS.md]

The server under test runs pinned to core 0 (``taskset``); redis-server and the load generator
run on the other core. The load generator is ``h2load`` (nghttp2-client, C: ~10 µs of CPU per
call, so it never is the bottleneck), posting a framed ``RateLimitRequest`` over HTTP/2 with
``--clients`` connections x ``--streams`` streams in flight (what a few Envoy workers do); without
h2load it falls back to a grpc.aio client, which itself saturates below ~5k calls/s here.
``floor`` is ``bench/rls_floor.py``: a servicer that returns one prebuilt OK, on the same
``grpc.server`` thread pool the ``grpcio`` service uses; ``memory``/``redis``/``redis-sliding``
run ``--server grpcio``, the ``h2-`` scenarios the native HTTP/2 server (``--server h2``: one
thread, the calls of each event-loop iteration decided as one batch, one Redis pipeline).
Reported: decisions/s (wall clock), service CPU in cores, decisions per service core-second (the
one-core capacity; the steadier number on a shared machine), p50/p99 latency per call at that load
and with one call in flight (what a decision adds to a request when the service is not saturated;
h2load's per-request log), and how many decisions failed open (Redis did not answer within the 50
ms deadline). Decisions are counted by the server itself (its Prometheus counters; the floor's
call count), never by the client, so an error answer cannot pass for a decision. Every step is
time-bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

if not __package__:  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section

CONFIG = """\
domain: bench
descriptors:
  - key: tenant
    rate_limit:
      unit: hour
      requests_per_unit: 1000000000
"""
METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
SCENARIOS = (
    "floor",
    "memory",
    "redis",
    "redis-sliding",
    "h2-floor",
    "h2-memory",
    "h2-redis",
    "h2-redis-sliding",
)
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def request() -> rls_pb2.RateLimitRequest:
    r = rls_pb2.RateLimitRequest(domain="bench")
    r.descriptors.add().entries.add(key="tenant", value="t1")
    return r


def check(address: str) -> None:
    """One real gRPC call: the server answers a well-formed decision with RateLimit headers."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request(), timeout=5)
    assert reply.overall_code == rls_pb2.RateLimitResponse.OK, reply


def h2load(
    port: int, duration: float, clients: int, streams: int, work: Path, warm_up: int = 1
) -> tuple[int, list[float]]:
    """(calls made after the warm-up, their latencies in seconds)."""
    body = request().SerializeToString()
    data = work / "request.bin"
    data.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
    log = work / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to an existing log
    out = subprocess.run(
        pinned(
            "1",
            [
                "h2load",
                "-D",
                str(round(duration)),
                "--warm-up-time",
                str(warm_up),
                "-c",
                str(clients),
                "-m",
                str(streams),
                "-d",
                str(data),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--log-file",
                str(log),
                f"http://127.0.0.1:{port}{METHOD}",
            ],
        ),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if match is None or int(match.group(2)):
        raise RuntimeError(f"h2load failed:\n{out}")
    latencies = []
    for line in log.read_text().splitlines():
        _start, status, micros = line.split("\t")[:3]
        if status == "200":
            latencies.append(int(micros) / 1e6)
    return len(latencies), latencies


async def grpc_load(address: str, duration: float, concurrency: int) -> tuple[int, list[float]]:
    channel = grpc.aio.insecure_channel(address)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    latencies: list[float] = []
    end = time.monotonic() + duration

    async def worker() -> None:
        r = request()
        while time.monotonic() < end:
            started = time.perf_counter()
            await stub.ShouldRateLimit(r, timeout=5)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await channel.close()
    return len(latencies), latencies


def scrape(port: int) -> dict[str, float]:
    """The service's Prometheus counters (decisions it made, backend failures)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            ("envoykit_ratelimit_total_hits_total", "envoykit_ratelimit_backend_errors_total")
        ):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = out.get(name.split("{")[0], 0.0) + float(value)
    return out


def run(scenario: str, opts: argparse.Namespace, work: Path) -> dict[str, float]:
    """One round. Decisions are counted by the server (its counters, or the floor's call count),
    so an error answer can never pass for a decision; CPU and wall time span the whole load
    (h2load's warm-up second included), latencies are h2load's measured phase."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        metrics_port = 0
        if scenario.endswith("floor"):
            argv = [sys.executable, str(ROOT / "bench" / "rls_floor.py"), "--port", str(port)]
            argv += ["--h2"] if scenario == "h2-floor" else ["--threads", str(opts.threads)]
        else:
            metrics_port = free_port()
            args = ["--metrics", f"127.0.0.1:{metrics_port}"]
            if scenario.startswith("h2-"):
                args += ["--server", "h2"]
            else:
                args += ["--server", "grpcio", "--threads", str(opts.threads)]
            if "redis" in scenario:
                redis_port = free_port()
                procs.append(
                    subprocess.Popen(
                        pinned(
                            "1",
                            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                        ),
                        stdout=subprocess.DEVNULL,
                    )
                )
                wait_port(redis_port)
                args += ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
                if scenario.endswith("redis-sliding"):
                    args += ["--algorithm", "sliding"]
            envoykit = str(Path(sys.executable).with_name("envoykit"))
            argv = [envoykit, "ratelimit", "serve", "--config-dir", str(work), "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--log-level", "error", *args]
        procs.append(subprocess.Popen(pinned("0", argv), stdout=subprocess.PIPE))
        server = procs[-1]
        wait_port(port)
        check(f"127.0.0.1:{port}")
        use_h2load = shutil.which("h2load") is not None and not opts.grpc_client
        # The latency one decision adds when the service is not saturated: one call in flight.
        idle_calls, idle = h2load(port, 2, 1, 1, work, warm_up=0) if use_h2load else (0, [])
        idle.sort()
        before = scrape(metrics_port) if metrics_port else {}
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        if use_h2load:
            _answers, latencies = h2load(port, opts.duration, opts.clients, opts.streams, work)
        else:
            if (os.cpu_count() or 1) > 1:
                os.sched_setaffinity(0, {1})
            _answers, latencies = asyncio.run(
                grpc_load(f"127.0.0.1:{port}", opts.duration, opts.clients * opts.streams)
            )
        wall = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        failed_open = 0.0
        if metrics_port:
            after = scrape(metrics_port)
            done = (
                after["envoykit_ratelimit_total_hits_total"] - before["envoykit_ratelimit_total_hits_total"]
            )
            failed_open = (
                after["envoykit_ratelimit_backend_errors_total"]
                - before["envoykit_ratelimit_backend_errors_total"]
            )
        else:
            server.terminate()
            out = server.communicate(timeout=10)[0].decode()
            done = int(out.split("calls ", 1)[1].split()[0]) - 1 - idle_calls  # less check() and idle
        latencies.sort()
        return {
            "decisions_per_s": done / wall,
            "server_cpu": cpu / wall,
            "per_core": done / cpu if cpu else 0.0,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "idle_p50_ms": idle[len(idle) // 2] * 1000 if idle else float("nan"),
            "idle_p99_ms": idle[int(len(idle) * 0.99)] * 1000 if idle else float("nan"),
            "failed_open": failed_open,
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


HEADER = (
    "| scenario | decisions/s | service CPU (cores) | decisions per service core-second | vs floor "
    "| p50 / p99 ms (saturated) | p50 / p99 ms (1 in flight) | failed open |\n"
    "|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median round is reported")
    parser.add_argument("--clients", type=int, default=2, help="HTTP/2 connections (Envoy workers)")
    parser.add_argument("--streams", type=int, default=8, help="calls in flight per connection")
    parser.add_argument("--threads", type=int, default=8, help="server thread pool (service and floor)")
    parser.add_argument("--scenarios", "--backend", default=",".join(SCENARIOS))
    parser.add_argument("--grpc-client", action="store_true", help="use the grpc.aio client, not h2load")
    parser.add_argument("--results", type=Path, help="append the table to this RESULTS.md")
    opts = parser.parse_args()
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench.yaml").write_text(CONFIG)
        print(HEADER, flush=True)
        floor_per_core = 0.0
        for scenario in opts.scenarios.split(","):
            rounds = [run(scenario, opts, work) for _ in range(opts.repeat)]
            r = sorted(rounds, key=lambda x: x["per_core"])[len(rounds) // 2]
            if scenario == "floor":
                floor_per_core = r["per_core"]
            ratio = f"{r['per_core'] / floor_per_core:.2f}" if floor_per_core else "-"
            spread = ""
            if len(rounds) > 1:
                spread = " (" + " / ".join(f"{x['decisions_per_s']:,.0f}" for x in rounds) + ")"
            row = (
                f"| {scenario} | {r['decisions_per_s']:,.0f}{spread} | {r['server_cpu']:.2f} "
                f"| {r['per_core']:,.0f} | {ratio} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
                f"| {r['idle_p50_ms']:.2f} / {r['idle_p99_ms']:.2f} "
                f"| {r['failed_open']:,.0f} |"
            )
            rows.append(row)
            print(row, flush=True)
    if opts.results is not None:
        append_results(opts.results, rows, opts)


def append_results(path: Path, rows: list[str], opts: argparse.Namespace) -> None:
    command = " ".join(["python", "bench/ratelimit_rls.py", *sys.argv[1:]])
    body = (
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Service pinned to "
        f"core 0 ({opts.threads} threads), h2load ({opts.clients} connections x {opts.streams} streams) "
        "and redis-server on core 1; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}. Decisions/s: the median round by decisions "
        "per core-second (every round in parentheses). Target: >= 8,000 decisions/s with Redis on one "
        "core; reading in NOTES.md above.\n\n" + HEADER + "\n" + "\n".join(rows)
    )
    write_section(path, "Rate-limit service (`ShouldRateLimit`, issue 6)", body)


if __name__ == "__main__":
    main()
