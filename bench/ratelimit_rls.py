"""``make bench`` (rate-limit part): decisions/s of ``envoykit ratelimit serve`` with Redis on one
core, and the latency a decision adds (p50/p99 of ShouldRateLimit as Envoy would call it).

Usage (from the repository root)::

    .venv/bin/python bench/ratelimit_rls.py [--duration S] [--concurrency N] [--backend redis,memory]

The service runs pinned to core 0 (``taskset``), redis-server and the load generator (grpc.aio
on uvloop, N calls in flight) on the other core. Loopback only; every step is time-bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

CONFIG = """\
domain: bench
descriptors:
  - key: tenant
    rate_limit:
      unit: second
      requests_per_unit: 1000000000
"""


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


async def load(address: str, duration: float, concurrency: int) -> tuple[int, list[float]]:
    channel = grpc.aio.insecure_channel(address)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    latencies: list[float] = []
    done = 0
    end = time.monotonic() + duration

    async def worker(i: int) -> None:
        nonlocal done
        request = rls_pb2.RateLimitRequest(domain="bench")
        request.descriptors.add().entries.add(key="tenant", value=f"t{i % 16}")
        while time.monotonic() < end:
            started = time.perf_counter()
            await stub.ShouldRateLimit(request, timeout=5)
            latencies.append(time.perf_counter() - started)
            done += 1

    await asyncio.wait_for(stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="bench"), timeout=5), 10)
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    await channel.close()
    return done, latencies


def run(backend: str, duration: float, concurrency: int, work: Path) -> dict[str, float]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        args = []
        if backend == "redis":
            redis_port = free_port()
            procs.append(
                subprocess.Popen(
                    pinned(
                        "1", ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"]
                    ),
                    stdout=subprocess.DEVNULL,
                )
            )
            wait_port(redis_port)
            args = ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"]
        port = free_port()
        envoykit = str(Path(sys.executable).with_name("envoykit"))
        procs.append(
            subprocess.Popen(
                pinned(
                    "0",
                    [
                        envoykit,
                        "ratelimit",
                        "serve",
                        "--config-dir",
                        str(work),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                        *args,
                    ],
                ),
            )
        )
        wait_port(port)
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})
        server = procs[-1].pid
        cpu_before = cpu_seconds(server)
        done, latencies = asyncio.run(load(f"127.0.0.1:{port}", duration, concurrency))
        cpu = cpu_seconds(server) - cpu_before
        latencies.sort()
        return {
            "decisions_per_s": done / duration,
            "server_cpu": cpu / duration,
            "per_core": done / cpu if cpu else 0.0,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        }
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backend", default="redis,memory")
    opts = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench.yaml").write_text(CONFIG)
        print(
            "| backend | decisions/s (measured) | service CPU (cores) | decisions per service core-second "
            "| p50 ms | p99 ms |\n|---|---|---|---|---|---|"
        )
        for backend in opts.backend.split(","):
            r = run(backend, opts.duration, opts.concurrency, work)
            print(
                f"| {backend} | {r['decisions_per_s']:,.0f} | {r['server_cpu']:.2f} | {r['per_core']:,.0f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
