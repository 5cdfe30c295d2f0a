"""``envoykit serve`` leaves a trace when native code crashes: every thread's Python stack."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit.testing import wait_for

GATEWAY = """
sidecar: {address: "unix:SOCK", metrics_address: "", server: MODEL}
upstreams:
  echo: {url: "http://127.0.0.1:9"}
chains:
  default:
    - filter: add-headers
      config: {request: {x-a: b}}
routes:
  - {prefix: /, upstream: echo}
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", ["aio", "threads"])
def test_a_segfault_in_the_sidecar_prints_every_threads_stack(tmp_path: Path, model: str) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="ek-"))  # short: unix socket paths are limited
    try:
        sock = sock_dir / "sidecar.sock"
        gateway = tmp_path / "gateway.yaml"
        gateway.write_text(GATEWAY.replace("SOCK", str(sock)).replace("MODEL", model))
        proc = subprocess.Popen(
            [sys.executable, "-m", "envoykit.cli", "serve", str(gateway), "--log-level", "warning"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            with grpc.insecure_channel(f"unix:{sock}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                def serving() -> bool:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    return reply.status == health_pb2.HealthCheckResponse.SERVING

                wait_for(serving, 30, what="the sidecar's gRPC health to report SERVING")
            proc.send_signal(signal.SIGSEGV)  # what a crash in an extension module raises
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGSEGV
        assert "Fatal Python error: Segmentation fault" in stderr
        assert "Current thread" in stderr and "Thread 0x" in stderr, stderr  # all threads
        assert "_serve_until_signal" in stderr or "run_sidecar" in stderr, stderr
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
