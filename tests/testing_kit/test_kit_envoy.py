"""EnvoyProcess, validation and the pytest fixtures, against the real Envoy 1.40."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.testing import (
    EchoUpstream,
    EnvoyConfigError,
    EnvoyFactory,
    EnvoyProcess,
    EnvoyStartError,
    RawConnection,
    envoy_binary,
    raw_request,
    validate_bootstrap,
)

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(60)]

Builder = Callable[..., dict[str, Any]]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        yield c


def _typo(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The same bootstrap with ``prefix`` misspelled in the first route."""
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    route["match"] = {"prefx": "/direct"}
    return bootstrap


# -- binary and validation ----------------------------------------------------------------------
def test_envoy_binary_is_the_wheel_binary() -> None:
    path = Path(envoy_binary())
    assert path.is_file() and os.access(path, os.X_OK)
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert "/1.40." in out.stdout


def test_envoy_binary_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOYKIT_ENVOY", "/opt/other/envoy")
    assert envoy_binary() == "/opt/other/envoy"


def test_validate_accepts_dict_text_and_path(bootstrap: Builder, tmp_path: Path) -> None:
    config = bootstrap(upstream_port=9)
    validate_bootstrap(config)
    validate_bootstrap(yaml.safe_dump(config))
    file = tmp_path / "b.yaml"
    file.write_text(yaml.safe_dump(config))
    validate_bootstrap(file)
    validate_bootstrap(str(file))


def test_validate_rejects_with_envoys_message(bootstrap: Builder, envoy_validate: Any) -> None:
    with pytest.raises(EnvoyConfigError, match="Envoy rejected the bootstrap") as info:
        envoy_validate(_typo(bootstrap(upstream_port=9)))
    assert "no such field: 'prefx'" in " ".join(info.value.output.split())


def test_validate_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_bootstrap(tmp_path / "nope.yaml")


# -- a running Envoy ----------------------------------------------------------------------------
def test_direct_response_and_proxying(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder, client: httpx.Client
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port))
    assert set(envoy.listener_ports) == {"main"}
    assert envoy.url("/x") == f"http://127.0.0.1:{envoy.listener_port('main')}/x"
    assert client.get(envoy.admin_url + "/ready").text.strip() == "LIVE"

    direct = client.get(envoy.url("/direct"))
    assert (direct.status_code, direct.text) == (200, "direct\n")
    assert echo_upstream.received == []

    resp = client.post(envoy.url("/api?x=1"), content=b"payload", headers={"x-from-test": "1"})
    assert resp.status_code == 200
    assert resp.headers["server"] == "envoy"
    assert resp.json()["path"] == "/api?x=1"
    seen = echo_upstream.last
    assert (seen.method, seen.path, seen.body) == ("POST", "/api?x=1", b"payload")
    assert seen.header("x-from-test") == "1"
    assert seen.header("x-request-id")  # added by Envoy: the request really went through it
    assert envoy.wait_for_stat("cluster.echo.upstream_rq_completed", 1) == 1
    assert envoy.stats()["http.ingress.downstream_rq_completed"] >= 2


def test_trailers_both_ways(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port, trailers=True))
    resp = raw_request(
        envoy.url("/t"),
        "POST",
        body=[b"a", b"b"],
        trailers={"x-request-trailer": "rq"},
        headers={"x-echo-trailer-x-response-trailer": "rs"},
    )
    assert resp.status == 200
    assert echo_upstream.last.trailers == (("x-request-trailer", "rq"),)
    assert resp.json()["trailers"] == [["x-request-trailer", "rq"]]
    assert resp.trailers == (("x-response-trailer", "rs"),)


def test_without_enable_trailers_envoy_drops_them(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port))
    resp = raw_request(
        envoy.url("/t"), "POST", body=[b"a"], trailers={"x-rq": "1"}, headers={"x-echo-trailer-x-rs": "2"}
    )
    assert (resp.trailers, echo_upstream.last.trailers) == ((), ())


def test_request_body_streams_through_envoy(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port))
    resp = raw_request(
        envoy.url("/s"),
        "POST",
        body=[b"chunk-one;", b"chunk-two"],
        between_chunks=lambda _: echo_upstream.wait_for_body_bytes(b"chunk-one;", timeout=10),
    )
    assert resp.json()["body"] == "chunk-one;chunk-two"


def test_response_body_streams_through_envoy(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port))
    with RawConnection("127.0.0.1", envoy.listener_port()) as conn:
        conn.send_head("GET", "/g", {"x-echo-gate": "streamed", "x-echo-chunks": "2"}, content_length=0)
        conn.end()
        first = conn.read_chunk()  # arrives while the upstream is still holding the rest
        assert first is not None and first.startswith(b"{")
        echo_upstream.release("streamed")
        resp = conn.read_response()
    assert resp.json()["path"] == "/g"


def test_access_log_and_log(
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    bootstrap: Builder,
    client: httpx.Client,
    tmp_path: Path,
) -> None:
    envoy = envoy_factory(bootstrap(echo_upstream.port, access_log=tmp_path / "access.log"), log_level="info")
    assert envoy.access_log_path == tmp_path / "access.log"
    client.get(envoy.url("/logged"))
    lines = envoy.access_log_lines(min_lines=1, timeout=10)
    assert '"GET /logged HTTP/1.1" 200' in lines[0]
    assert "starting main dispatch loop" in envoy.log_text()  # flushed at once, not buffered
    assert "[info][main]" in envoy.wait_for_log("starting main dispatch loop", timeout=10)


def test_two_envoys_at_once(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, bootstrap: Builder
) -> None:
    first = envoy_factory(bootstrap(echo_upstream.port))
    second = envoy_factory(bootstrap(echo_upstream.port, listener="other"))
    assert first.listener_port() != second.listener_port("other")
    assert first.workdir != second.workdir
    for envoy in (first, second):
        assert raw_request(envoy.url("/direct")).text == "direct\n"


def test_factory_validates_before_starting(envoy_factory: EnvoyFactory, bootstrap: Builder) -> None:
    with pytest.raises(EnvoyConfigError, match="prefx"):
        envoy_factory(_typo(bootstrap(upstream_port=9)))
    assert envoy_factory.started == []


def test_start_failure_quotes_envoy(envoy_factory: EnvoyFactory, bootstrap: Builder) -> None:
    with pytest.raises(EnvoyStartError, match="exited with code 1") as info:
        envoy_factory(_typo(bootstrap(upstream_port=9)), validate=False)
    # protobuf deliberately varies the spacing of its messages ("no  such field"): normalise.
    assert "no such field: 'prefx'" in " ".join(str(info.value).split())


def test_runtime_failure_that_validation_cannot_see(envoy_factory: EnvoyFactory, bootstrap: Builder) -> None:
    config = bootstrap(upstream_port=9)
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "192.0.2.1"
    with pytest.raises(EnvoyStartError, match=r"cannot bind '192\.0\.2\.1:0'"):
        envoy_factory(config)  # validation passes: only binding fails


def test_process_lifecycle_without_pytest_fixtures(bootstrap: Builder, tmp_path: Path) -> None:
    config = bootstrap(upstream_port=9)
    config["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}

    def running(process: EnvoyProcess) -> bool:  # a call, so mypy does not narrow the property
        return process.running

    with EnvoyProcess(config, workdir=tmp_path / "e") as envoy:
        assert running(envoy) and envoy.pid
        assert not envoy.admin_url.endswith(":9901")  # forced to port 0
        assert config["admin"]["address"]["socket_address"]["port_value"] == 9901  # caller's dict untouched
        assert (
            yaml.safe_load(envoy.config_path.read_text())["admin"]["address"]["socket_address"]["port_value"]
            == 0
        )
        with pytest.raises(KeyError, match="no listener 'nope'"):
            envoy.listener_port("nope")
    assert not running(envoy)
    assert envoy.returncode == 0  # SIGTERM is a clean shutdown for Envoy
    assert envoy.stop() == 0  # idempotent


@pytest.mark.slow
def test_failure_report_includes_the_envoy_log(tmp_path: Path) -> None:
    """The plugin's report hook: a failing test that started Envoy shows its log tail."""
    test_file = tmp_path / "test_inner.py"
    config: dict[str, Any] = {"static_resources": {"listeners": [], "clusters": []}}
    test_file.write_text(
        "import pytest\n"
        f"CONFIG = {config!r}\n"
        "@pytest.mark.envoy\n"
        "def test_fails(envoy_factory):\n"
        "    envoy_factory(CONFIG, log_level='info')\n"
        "    assert False, 'boom'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "envoy-1 log tail" in done.stdout
    assert "starting main dispatch loop" in done.stdout
