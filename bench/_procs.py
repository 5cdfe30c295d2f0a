"""Child processes for the bench: start pinned, wait for readiness, always tear down.

Every process runs in its own session (process group), so teardown reaches its children too,
and is registered on an ``ExitStack`` the moment it exists: an error, a timeout or Ctrl-C in
any later step still stops it. Pinning goes through ``taskset``; when that cannot work (one
core, no taskset, a restricted cpuset) the bench runs unpinned and says so instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pinning", "Proc", "detect_pinning", "spawn", "BenchError"]


class BenchError(RuntimeError):
    """A scenario could not be set up or measured; the message says which step and why."""


@dataclass(frozen=True)
class Pinning:
    """Which CPU each role runs on; ``None`` everywhere means unpinned (with ``reason``)."""

    envoy: str | None
    sidecar: str | None
    reason: str

    def describe(self) -> str:
        if self.envoy is None:
            return f"unpinned ({self.reason})"
        return (
            f"Envoy under test on CPU {self.envoy}, sidecar on CPU {self.sidecar}; "
            "upstream Envoy and wrk unpinned"
        )


def detect_pinning(enabled: bool = True) -> Pinning:
    """Pick two distinct allowed CPUs (Envoy, sidecar), or explain why pinning is off."""
    if not enabled:
        return Pinning(None, None, "disabled by --no-pin")
    taskset = shutil.which("taskset")
    if taskset is None:
        return Pinning(None, None, "taskset not found")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None, f"only {len(cpus)} CPU available")
    envoy_cpu, sidecar_cpu = str(cpus[0]), str(cpus[1])
    for cpu in (envoy_cpu, sidecar_cpu):
        probe = subprocess.run([taskset, "-c", cpu, "true"], capture_output=True, text=True, timeout=10)
        if probe.returncode != 0:
            return Pinning(None, None, f"taskset -c {cpu} failed: {probe.stderr.strip()}")
    return Pinning(envoy_cpu, sidecar_cpu, "")


class Proc:
    """A started child process with its log file; ``stop()`` is idempotent."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_line(self, prefix: str, timeout: float) -> str:
        """Return the rest of the first log line that starts with ``prefix`` (e.g. ``ready ``).

        Reads the log file rather than a pipe: a chatty child can never block on a full pipe.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = self.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            for line in text.splitlines():
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
            if not self.alive():
                break
            time.sleep(0.05)
        status = f"exited with code {self.popen.poll()}" if not self.alive() else "timed out"
        raise BenchError(f"{self.name} never printed {prefix!r} ({status}):\n{self.log_tail()}")

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=grace)


def spawn(
    stack: contextlib.ExitStack,
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    cpu: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` (pinned to ``cpu`` when given) and register its teardown on ``stack``.

    stdout and stderr go to ``log_dir/<name>.log``: a failure can quote it, and no pipe can fill
    up during a long run.
    """
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise BenchError(f"cannot start {name}: {exc}") from exc
    proc = Proc(name, popen, log_path)
    stack.callback(proc.stop)
    return proc
