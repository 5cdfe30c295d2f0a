"""``make bench``: throughput and latency of Envoy with no filter, envoykit's no-op ext_proc chain
(TCP and unix socket), the same chain compiled to Wasm and run inside Envoy, the PyPI peer
``envoy-extproc-sdk`` running the same no-op logic, envoykit's ext_authz runtime (a no-op chain
against Envoy's ext_authz ceiling: HTTP to a static server) and JWT RS256 verification (envoykit's
``jwt`` filter in ext_authz against Envoy's native ``jwt_authn``).

Usage (from the repository root)::

    .venv/bin/python bench/run.py [--duration S] [--connections N] [--repeat R] [--quick]
                                  [--only no-filter,peer-tcp] [--quiet-wait S] [--retries N]
                                  [--no-pin] [--no-results]

Prints a table and writes bench/RESULTS.md (with this exact command). Logs and bootstraps of
each scenario are kept in bench/out/<scenario>/. Loopback only; every step is time-bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import FrameType

if not __package__:  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._envoy import envoy_binary, envoy_version, start_envoy, upstream_bootstrap
from bench._measure import BUSY_NEIGHBOUR_CORES, Outcome, RunSettings, Scenario, measure_once
from bench._procs import BenchError, detect_pinning
from bench._report import collect_environment, console_table, results_markdown
from bench._sidecars import BENCH_DIR, REPO_DIR, SidecarStarted, peer_details, start_module, start_peer


def _module(
    module: str, address: str, stack: contextlib.ExitStack, work_dir: Path, cpu: str | None, *args: str
) -> SidecarStarted:
    target = address.format(work_dir=work_dir)
    return start_module(stack, module, address=target, work_dir=work_dir, cpu=cpu, extra_args=args)


def _floor(sync: bool, stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    return _module("bench.floor_noop", TCP, stack, work_dir, cpu, *(["--sync"] if sync else []))


def _envoykit_threads(stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    return _module("bench.envoykit_noop", TCP, stack, work_dir, cpu, "--server", "threads", "--threads", "8")


def _envoykit_h2(stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    return _module("bench.envoykit_noop", TCP, stack, work_dir, cpu, "--server", "h2")


def _authz(chain: str, stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    """envoykit's ext_authz sidecar (``server: threads``, 8 threads; ``aio`` for ``<chain>-aio``)
    with the no-op or JWT chain."""
    model = "aio" if chain.endswith("-aio") else "threads"
    chain = chain.removesuffix("-aio")
    args = ["--chain", chain, "--server", model, "--threads", "8"]
    if chain == "jwt":
        from bench._jwt import material

        args += ["--jwks", str(material().jwks_path)]
    return _module("bench.envoykit_authz", TCP, stack, work_dir, cpu, *args)


def _authz_http(chain: str, stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    """envoykit's HTTP ext_authz server (httptools on uvloop) with the no-op or JWT chain; the
    gRPC side of the sidecar only serves health (one idle thread)."""
    args = ["--chain", chain, "--protocol", "http", "--server", "threads", "--threads", "1"]
    if chain == "jwt":
        from bench._jwt import material

        args += ["--jwks", str(material().jwks_path)]
    return _module("bench.envoykit_authz", TCP, stack, work_dir, cpu, *args)


def _static_authz_server(stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    """The ext_authz ceiling's authorization server: an Envoy answering 200 itself, on the
    sidecar's core (so no Python server limits it)."""
    server = start_envoy(stack, "authz-server", upstream_bootstrap(), work_dir=work_dir, cpu=cpu)
    return SidecarStarted(server.listener, server.proc.pid)


def _peer(stack: contextlib.ExitStack, work_dir: Path, cpu: str | None) -> SidecarStarted:
    return start_peer(stack, address="127.0.0.1:0", work_dir=work_dir, cpu=cpu)


TCP, UDS = "127.0.0.1:0", "unix:{work_dir}/sidecar.sock"
SCENARIOS = [
    Scenario("no-filter", "(a) no filter"),
    Scenario(
        "envoykit-tcp", "(b) envoykit no-op, TCP loopback", partial(_module, "bench.envoykit_noop", TCP)
    ),
    Scenario(
        "envoykit-threads-tcp",
        "(b2) envoykit no-op, TCP loopback, `server: threads`",
        _envoykit_threads,
    ),
    Scenario(
        "envoykit-h2-tcp",
        "(b3) envoykit no-op, TCP loopback, `server: h2` (native HTTP/2)",
        _envoykit_h2,
    ),
    Scenario("peer-tcp", "(c) envoy-extproc-sdk 0.1.1 no-op, TCP loopback", _peer),
    Scenario("envoykit-uds", "(d) envoykit no-op, unix socket", partial(_module, "bench.envoykit_noop", UDS)),
    Scenario("wasm-noop", "(e) envoykit no-op as Wasm inside Envoy", wasm=True),
    Scenario(
        "wasm-floor", "(ref) bare Python callbacks in Envoy, no SDK (same shim)", wasm=True, wasm_floor=True
    ),
    Scenario("floor-tcp", "(ref) bare grpc.aio servicer, no SDK, TCP", partial(_floor, False)),
    Scenario("floor-sync-tcp", "(ref) bare sync grpc servicer, 8 threads, TCP", partial(_floor, True)),
    Scenario(
        "authz-noop",
        "(f) envoykit ext_authz no-op chain, gRPC, `server: threads`",
        partial(_authz, "noop"),
        mode="ext_authz",
    ),
    Scenario(
        "authz-floor",
        "(ref) bare sync grpc ext_authz Check servicer, no SDK, 8 threads",
        partial(_module, "bench.floor_authz", TCP),
        mode="ext_authz",
    ),
    Scenario(
        "authz-http-ceiling",
        "(ref) Envoy ext_authz HTTP to a static 200 server (Envoy direct_response)",
        _static_authz_server,
        mode="ext_authz_http",
    ),
    Scenario(
        "authz-http-noop",
        "(f2) envoykit ext_authz no-op chain, HTTP (`authz.protocol: http`)",
        partial(_authz_http, "noop"),
        mode="ext_authz_http",
    ),
    Scenario(
        "jwt-envoykit",
        "(g) JWT RS256: envoykit `jwt` in ext_authz, `server: threads`",
        partial(_authz, "jwt"),
        mode="ext_authz",
        jwt_token=True,
    ),
    Scenario(
        "jwt-envoykit-aio",
        "(ref) JWT RS256: envoykit `jwt` in ext_authz, `server: aio`",
        partial(_authz, "jwt-aio"),
        mode="ext_authz",
        jwt_token=True,
    ),
    Scenario(
        "jwt-envoykit-http",
        "(g2) JWT RS256: envoykit `jwt` in ext_authz, HTTP (`authz.protocol: http`)",
        partial(_authz_http, "jwt"),
        mode="ext_authz_http",
        jwt_token=True,
    ),
    Scenario("jwt-native", "(g) JWT RS256: Envoy native `jwt_authn`", native_jwt=True, jwt_token=True),
]


WASM_FILTERS = BENCH_DIR / "wasm_filters.py"
WASM_MODULE = BENCH_DIR / "out" / "wasm" / "envoykit_bench.wasm"
WASM_FLOOR = BENCH_DIR / "wasm_floor.py"
WASM_FLOOR_MODULE = BENCH_DIR / "out" / "wasm" / "floor_bench.wasm"


def _build_wasm(floor: bool = False) -> tuple[Path | None, str | None]:
    """Build one of the bench's proxy-wasm modules once per run (builds cache by their inputs)."""
    source, out = (WASM_FLOOR, WASM_FLOOR_MODULE) if floor else (WASM_FILTERS, WASM_MODULE)
    print(f"building {out.relative_to(REPO_DIR)} from {source.name} ...", flush=True)
    started = time.monotonic()
    from envoykit.wasm._build import build_module
    from envoykit.wasm._filters import WasmBuildError, build_filter_wasm

    try:
        result = build_module(source, out) if floor else build_filter_wasm(source, out)
    except (WasmBuildError, OSError, subprocess.SubprocessError) as exc:  # the others still run
        return None, f"Wasm build failed: {type(exc).__name__}: {str(exc).strip()[:2000]}"
    how = "rebuilt" if result.rebuilt else "cached"
    print(f"   {how} in {time.monotonic() - started:.1f}s, {result.path.stat().st_size:,} bytes", flush=True)
    return result.path, None


def _command() -> str:
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    with contextlib.suppress(ValueError):
        argv[0] = str(Path(argv[0]).absolute().relative_to(REPO_DIR))
    for i, arg in enumerate(argv[1:], start=1):
        with contextlib.suppress(ValueError):
            argv[i] = str(Path(arg).resolve().relative_to(REPO_DIR)) if arg.endswith(".py") else arg
    return shlex.join(argv)


def _sample_and_report(outcome: Outcome, settings: RunSettings) -> bool:
    """Take one sample and print it; True when other processes disturbed it (worth a retry)."""
    before = len(outcome.samples)
    measure_once(outcome, settings)
    if len(outcome.samples) == before:
        print(f"   no result: {outcome.error}", flush=True)
        return False
    sample = outcome.samples[-1]
    r = sample.wrk
    line = f"{r.requests_per_s:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms"
    if not r.clean:
        line += f" ({r.non_2xx} non-2xx, {r.socket_errors} socket errors)"
    print(f"   {line}; other processes: {sample.others_cores:.2f} cores", flush=True)
    return sample.others_cores >= BUSY_NEIGHBOUR_CORES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per scenario (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (each runs every scenario once); the median is reported"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 s runs, 1 s warm-up: a smoke test of the harness"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(s.key for s in SCENARIOS)}"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each window wait up to S seconds for other processes to go quiet (0: don't)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="extra samples per round when other processes disturbed one (default 2)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin Envoy and the sidecar to CPUs")
    parser.add_argument(
        "--no-results", action="store_true", help="print the table but leave RESULTS.md alone"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.quiet_wait, args.retries = 3.0, 1.0, min(args.quiet_wait, 5.0), 0
    if args.duration <= 0 or args.connections < 1 or args.repeat < 1 or args.retries < 0:
        parser.error("--duration, --connections and --repeat must be positive, --retries >= 0")
    return args


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds every ExitStack, so children are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    chosen = SCENARIOS
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = wanted - {s.key for s in SCENARIOS}
        if unknown:
            print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        chosen = [s for s in SCENARIOS if s.key in wanted]
    try:
        version = envoy_version(envoy_binary())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    out_dir = BENCH_DIR / "out"
    out_dir.mkdir(exist_ok=True)
    wasm_module, wasm_error = (
        _build_wasm() if any(s.wasm and not s.wasm_floor for s in chosen) else (None, None)
    )
    floor_module, floor_error = _build_wasm(floor=True) if any(s.wasm_floor for s in chosen) else (None, None)
    settings = RunSettings(
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        repeat=args.repeat,
        pinning=detect_pinning(not args.no_pin),
        keep_logs=out_dir,
        quiet_wait_s=args.quiet_wait,
        wasm_module=wasm_module,
        wasm_error=wasm_error or floor_error,
        wasm_floor_module=floor_module,
    )
    env = collect_environment(_command(), version)
    print(f"Envoy {version}; {env.cpus}; pinning: {settings.pinning.describe()}", flush=True)

    outcomes = [Outcome(scenario) for scenario in chosen]
    for round_no in range(1, args.repeat + 1):
        for outcome in outcomes:
            if outcome.error and outcome.error.startswith("unavailable:"):
                continue  # it will not install or import in the next round either
            for attempt in range(1 + args.retries):
                print(f"-> [{round_no}/{args.repeat}] {outcome.scenario.title} ...", flush=True)
                if not _sample_and_report(outcome, settings):
                    break
                if attempt < args.retries:
                    print("   disturbed by other processes: taking it again", flush=True)

    print()
    print(console_table(outcomes))
    (out_dir / "results.json").write_text(json.dumps([o.to_json() for o in outcomes], indent=1))
    if not args.no_results:
        details = peer_details() if any(s.key.startswith("peer") for s in chosen) else []
        (BENCH_DIR / "RESULTS.md").write_text(results_markdown(outcomes, settings, env, details))
        print(f"\nwrote {BENCH_DIR / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
