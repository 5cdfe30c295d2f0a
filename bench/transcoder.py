"""``make bench`` (transcoder part): transcoded unary requests/s through one Envoy, envoykit's
``grpc-json-transcoder`` (ext_proc sidecar) vs Envoy's native ``grpc_json_transcoder`` vs plain
gRPC (no transcoding), all to the same grpcio bookstore backend (``tests/transcoder/bookstore``).

Usage (from the repository root)::

    .venv/bin/python bench/transcoder.py [--duration S] [--connections N]

Envoy (``--concurrency 1``), the backend and the load generators run on the first core, the
sidecar (``envoykit serve``, its own process) alone on the second (``taskset``), as in
``bench/run.py``. Per scenario it prints the CPU each process spent per request. The JSON load is ``wrk`` on
``GET /v1/shelves/1/books/2``; the gRPC load is a grpc.aio client (N calls in flight) calling
``GetBook`` through the native listener (which passes gRPC through untouched). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._report import write_section  # noqa: E402
from bench._wrk import run_wrk  # noqa: E402
from envoykit.envoyconfig import render_bootstrap  # noqa: E402
from envoykit.gateway import load_gateway  # noqa: E402
from envoykit.testing import EnvoyProcess, free_port, wait_for  # noqa: E402
from tests.transcoder.bookstore.server import build_descriptor_set  # noqa: E402
from tests.transcoder.native import NATIVE, NATIVE_CLUSTER, grpc_cluster, native_listener  # noqa: E402

PATH = "/v1/shelves/1/books/2"


def _ok(url: str) -> bool | None:
    try:
        return httpx.get(url).status_code == 200 or None
    except httpx.HTTPError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def _start(argv: list[str], stack: ExitStack) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    return proc


async def grpc_load(
    address: str, descriptor: bytes, duration: float, concurrency: int
) -> tuple[int, list[float]]:
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(descriptor).file:
        pool.Add(f)
    request_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("bookstore.GetBookRequest"))
    channel = grpc.aio.insecure_channel(address)
    call = channel.unary_unary(
        "/bookstore.Bookstore/GetBook",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=bytes,
    )
    request = request_cls(shelf=1, book=2)
    latencies: list[float] = []
    done = 0
    end = time.monotonic() + duration

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            started = time.perf_counter()
            await call(request, timeout=5)
            latencies.append(time.perf_counter() - started)
            done += 1

    await call(request, timeout=10)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await channel.close()
    return done, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--server", choices=["aio", "threads", "h2"], default="h2", help="sidecar server model"
    )
    parser.add_argument("--results", type=Path, help="write the table into this RESULTS.md")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        descriptor = build_descriptor_set(work / "bookstore.pb")
        backend = _start(
            pinned("0", [sys.executable, "-m", "tests.transcoder.bookstore.server", str(descriptor)]), stack
        )
        port = int((backend.stdout.readline() if backend.stdout else "ready 0").split()[1])
        sidecar_port = free_port()
        gateway_file = work / "gateway.yaml"
        gateway_file.write_text(
            f"""
listener: {{port: 0}}
admin: {{port: 0}}
sidecar: {{address: "127.0.0.1:{sidecar_port}", metrics_address: "", server: {opts.server}}}
upstreams:
  bookstore: {{url: "http://127.0.0.1:{port}", http2: true}}
chains:
  default:
    - filter: grpc-json-transcoder
      config: {{proto_descriptor: "{descriptor}", services: [bookstore.Bookstore]}}
routes:
  - {{prefix: /, upstream: bookstore}}
"""
        )
        envoykit = str(Path(sys.executable).with_name("envoykit"))
        sidecar = _start(pinned("1", [envoykit, "serve", str(gateway_file), "--log-level", "warning"]), stack)
        gateway = load_gateway(gateway_file)
        bootstrap: dict[str, Any] = render_bootstrap(gateway, listener_port=0, admin_port=0, access_log="")
        bootstrap["static_resources"]["listeners"].append(native_listener(descriptor, {}))
        bootstrap["static_resources"]["clusters"].append(grpc_cluster(NATIVE_CLUSTER, port))
        envoy = stack.enter_context(EnvoyProcess(bootstrap, workdir=work))
        if (os.cpu_count() or 1) > 1 and envoy.pid is not None:
            os.sched_setaffinity(envoy.pid, {0})
            os.sched_setaffinity(0, {0})
        ours = next(n for n in envoy.listener_ports if n != NATIVE)
        wait_for(lambda: _ok(envoy.url(PATH, ours)), timeout=20, what="the transcoded route answering 200")
        pids = {"envoy": envoy.pid or 0, "sidecar": sidecar.pid, "backend": backend.pid}
        rows = [
            "| scenario | req/s | p50 ms | p99 ms | errors | CPU µs/request: envoy, sidecar, backend |",
            "|---|---|---|---|---|---|",
        ]
        print("\n".join(rows))
        results = {}
        for label, listener in (
            ("native grpc_json_transcoder", NATIVE),
            (f"envoykit grpc-json-transcoder (sidecar `{opts.server}`)", ours),
        ):
            before = {k: cpu_seconds(p) for k, p in pids.items()}
            r = run_wrk(envoy.url(PATH, listener), duration_s=opts.duration, connections=opts.connections)
            used = {k: (cpu_seconds(p) - before[k]) / max(r.requests, 1) * 1e6 for k, p in pids.items()}
            results[label] = r.requests_per_s
            cpu = f"{used['envoy']:.0f}, {used['sidecar']:.0f}, {used['backend']:.0f}"
            errors = r.non_2xx + r.socket_errors
            rows.append(
                f"| {label} | {r.requests_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {errors} | {cpu} |"
            )
            print(rows[-1], flush=True)
        done, latencies = asyncio.run(
            grpc_load(
                f"127.0.0.1:{envoy.listener_port(NATIVE)}",
                descriptor.read_bytes(),
                opts.duration,
                opts.connections,
            )
        )
        latencies.sort()
        p50, p99 = latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000
        plain = done / opts.duration
        rows.append(f"| plain gRPC (grpc.aio client) | {plain:,.0f} | {p50:.2f} | {p99:.2f} | 0 | |")
        print(rows[-1])
        native, mine = (
            results["native grpc_json_transcoder"],
            results[next(k for k in results if "envoykit" in k)],
        )
        ratio = f"envoykit / native = {mine / native:.2f} (target >= 0.3)" if native else "native: no answers"
        print("\n" + ratio)
        if opts.results is not None:
            command = " ".join(["python", "bench/transcoder.py", *sys.argv[1:]])
            body = (
                f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). One Envoy "
                f"(--concurrency 1, core 0) with both listeners in front of one grpcio bookstore; sidecar "
                f"server `{opts.server}`; wrk {opts.connections} connections, {opts.duration:g} s per row; "
                f"`GET {PATH}` (unary `GetBook`) through each transcoder, and the same call as plain "
                "gRPC through Envoy.\n\n" + "\n".join(rows) + "\n\n" + ratio
            )
            write_section(opts.results, "gRPC-JSON transcoding (unary, issue 7)", body)


if __name__ == "__main__":
    main()
