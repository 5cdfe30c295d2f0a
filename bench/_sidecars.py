"""The ext_proc sidecars under comparison, each started as its own process.

Each starter returns the address Envoy should dial (with the OS-assigned port filled in), or
raises ``Unavailable`` with the reason: a sidecar that cannot run is a recorded result ("the
peer did not install because ..."), not a crash of the whole bench.

Both sidecars print ``ready <address>`` once they serve; the harness waits for that line.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ._procs import BenchError, Proc, spawn

__all__ = [
    "BENCH_DIR",
    "REPO_DIR",
    "SidecarStarted",
    "Unavailable",
    "ensure_peer_venv",
    "peer_details",
    "start_module",
    "start_peer",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEER_VENV = BENCH_DIR / ".venv-peer"
PEER_SERVER = BENCH_DIR / "peer" / "noop_server.py"
#: Exit code of ``bench/envoykit_noop.py`` when envoykit has no sidecar runtime to serve with.
EXIT_UNAVAILABLE = 3
#: Environment the peer's users run it with (see the field notes and peer/noop_server.py).
PEER_ENV = {"DD_TRACE_ENABLED": "false", "REVEAL_EXTPROC_CHAIN": "false", "PYTHONUNBUFFERED": "1"}


class Unavailable(Exception):
    """This sidecar cannot run here; ``str()`` is the reason recorded in the results."""


@dataclass(frozen=True)
class SidecarStarted:
    address: str
    pid: int


_peer_state: tuple[bool, str] | None = None


def ensure_peer_venv(timeout: float = 900.0) -> None:
    """Create bench/.venv-peer once per run (``setup_peer.sh`` is a no-op when up to date)."""
    global _peer_state
    if _peer_state is None:
        try:
            done = subprocess.run(
                ["bash", str(BENCH_DIR / "setup_peer.sh")], capture_output=True, text=True, timeout=timeout
            )
            if done.returncode == 0:
                _peer_state = (True, "")
            else:
                noise = "is ignored: it is neither a file nor a directory"
                lines = [ln for ln in (done.stderr + done.stdout).splitlines() if noise not in ln]
                tail = [ln if len(ln) <= 300 else ln[:300] + " ..." for ln in lines[-20:]]
                _peer_state = (False, "setup_peer.sh failed:\n" + "\n".join(tail))
        except subprocess.TimeoutExpired:
            _peer_state = (False, f"setup_peer.sh did not finish within {timeout:.0f}s")
    ok, reason = _peer_state
    if not ok:
        raise Unavailable(reason)


def _wait_ready(proc_name: str, proc: Proc, timeout: float) -> str:
    try:
        return proc.wait_line("ready ", timeout)
    except BenchError as exc:
        if proc.popen.poll() == EXIT_UNAVAILABLE:
            raise Unavailable(f"{proc_name}: {proc.log_tail(5)}") from exc
        raise


def start_module(
    stack: contextlib.ExitStack,
    module: str,
    *,
    address: str,
    work_dir: Path,
    cpu: str | None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> SidecarStarted:
    """``python -m MODULE --address ADDRESS`` from envoykit's own venv (``bench.envoykit_noop``,
    ``bench.floor_noop``)."""
    argv = [sys.executable, "-m", module, "--address", address, *extra_args]
    name = module.rsplit(".", 1)[-1]
    env = {"PYTHONUNBUFFERED": "1"}
    proc = spawn(stack, name, argv, log_dir=work_dir, cpu=cpu, cwd=REPO_DIR, env=env)
    return SidecarStarted(_wait_ready(name, proc, timeout), proc.pid)


def start_peer(
    stack: contextlib.ExitStack, *, address: str, work_dir: Path, cpu: str | None, timeout: float = 30.0
) -> SidecarStarted:
    """The peer's no-op processor from its own venv (installed on first use)."""
    ensure_peer_venv()
    argv = [str(PEER_VENV / "bin" / "python"), str(PEER_SERVER), "--address", address]
    proc = spawn(stack, "peer-sidecar", argv, log_dir=work_dir, cpu=cpu, cwd=REPO_DIR, env=PEER_ENV)
    return SidecarStarted(_wait_ready("peer sidecar", proc, timeout), proc.pid)


_PEER_KEY_PINS = ("envoy-extproc-sdk", "ddtrace", "datadog", "grpcio", "grpclib", "protobuf", "xds-protos")


def peer_details() -> list[str]:
    """How the peer was installed and run, as Markdown lines for RESULTS.md."""
    lines = (BENCH_DIR / "peer" / "requirements.txt").read_text().splitlines()
    pins = [ln for ln in lines if ln and not ln.startswith("#")]
    key = ", ".join(f"`{p}`" for p in pins if p.split("==")[0].lower() in _PEER_KEY_PINS)
    env = " ".join(f"{k}={v}" for k, v in PEER_ENV.items() if k != "PYTHONUNBUFFERED")
    return [
        "- installed by `bash bench/setup_peer.sh` into its own venv `bench/.venv-peer`, from",
        f"  `bench/peer/requirements.txt` ({len(pins)} exact pins); key pins: {key}",
        "- what it needs beyond its own metadata to import: `xds-protos` (its `envoy.*` imports),",
        "  `ddtrace<2` (it imports `ddtrace.Span`) and a `grpc_health_check.v1` module, which no package",
        "  ships: `bench/peer/grpc_health_check` aliases grpcio-health-checking's `grpc_health.v1`",
        "- run as `bench/.venv-peer/bin/python bench/peer/noop_server.py --address 127.0.0.1:0`",
        f"  with `{env}`: tracing off, as its users run it without a Datadog agent, and its",
        "  `x-ext-procs-applied` response header off, so it does the same no-op as envoykit",
        "- served like its own `serve()`: `grpc.aio.server()` on the default asyncio loop, with its",
        "  `BaseExtProcService` and health servicer, but bound to loopback instead of its hard-coded `[::]`",
    ]
