"""The CLI as a user runs it: real processes, real Envoy, exit codes and messages."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from envoykit.cli import app
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import load_gateway
from envoykit.testing import wait_for

ENVOYKIT = [sys.executable, "-m", "envoykit.cli"]
BAD = Path(__file__).parents[1] / "gateway" / "bad" / "filter_config_typo.yaml"


@pytest.mark.parametrize("command", ["check", "envoy-config", "serve"])
def test_bad_config_exits_2_with_file_field_and_reason(command):
    result = CliRunner().invoke(app, [command, str(BAD)])
    assert result.exit_code == 2
    assert f"{BAD}:10: chains.default[0].config.requets: unknown field" in result.output


@pytest.mark.envoy
def test_check_accepts_the_demo_gateway():
    demo = Path(__file__).parents[2] / "sdk" / "envoykit" / "demo" / "gateway.yaml"
    result = CliRunner().invoke(app, ["check", str(demo)])
    assert result.exit_code == 0, result.output
    assert "OK; chains: default (2 filters), api (1 filters)" in result.output


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_smoke_runs_the_whole_stack():
    result = subprocess.run(
        [*ENVOYKIT, "demo", "--smoke", "--port", "0"], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   GET /admin -> 403" in result.stdout
    assert "ok   GET /api/books -> 200 {'x-envoykit': 'api'}" in result.stdout


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_refuses_a_busy_port():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "ENVOYKIT_DEMO_PORT": str(port)}
        result = subprocess.run([*ENVOYKIT, "demo"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert f"port {port} is in use" in result.stderr


GATEWAY = """
sidecar: {address: "unix:SOCK", metrics_address: "", drain_seconds: 5}
upstreams:
  echo: {url: "http://127.0.0.1:UPSTREAM"}
chains:
  default:
    - filter: add-headers
      config: {request: {x-served-by: envoykit-serve}}
routes:
  - {prefix: /, upstream: echo}
"""


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_process_behind_envoy_then_sigterm_stops_cleanly(tmp_path, echo_upstream, envoy_factory):
    sock_dir = Path(tempfile.mkdtemp(prefix="ek-"))
    try:
        sock = sock_dir / "sidecar.sock"
        gw_file = tmp_path / "gateway.yaml"
        gw_file.write_text(GATEWAY.replace("SOCK", str(sock)).replace("UPSTREAM", str(echo_upstream.port)))
        log = (tmp_path / "serve.log").open("w")
        proc = subprocess.Popen(
            [*ENVOYKIT, "serve", str(gw_file), "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            with grpc.insecure_channel(f"unix:{sock}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                def serving() -> bool:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    return reply.status == health_pb2.HealthCheckResponse.SERVING

                wait_for(serving, 30, what="the sidecar's gRPC health to report SERVING")
            envoy = envoy_factory(render_bootstrap(load_gateway(gw_file), listener_port=0, admin_port=0))
            response = httpx.get(envoy.url("/"), timeout=10)
            assert response.status_code == 200
            assert echo_upstream.last.header("x-served-by") == "envoykit-serve"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            log.close()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wasm_demo_smoke_runs_python_inside_envoy():
    pytest.importorskip("ziglang")
    result = subprocess.run(
        [*ENVOYKIT, "demo", "--wasm", "--smoke", "--port", "0"], capture_output=True, text=True, timeout=280
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   GET /admin -> 403 {'x-envoykit-wasm': 'yes'}" in result.stdout
    assert "ok   GET /api/books -> 200 {'x-envoykit': 'api', 'x-envoykit-wasm': 'yes'}" in result.stdout
