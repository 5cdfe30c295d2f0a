"""Server lifecycle: health, graceful drain, unix sockets, the thread runner, metrics, addresses."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf.internal import api_implementation
from grpc_health.v1 import health_pb2, health_pb2_grpc

import envoykit.extproc
from envoykit import Chain, ConfigError, EmptyConfig, HttpFilter, NoState, Request, Response
from envoykit.extproc import SERVICE_NAME, SidecarServer, SidecarThread
from envoykit.runtime import ListenAddress, parse_listen_address

from .support import exchange, mutation_of, request_headers, response_headers, run, serve

pytestmark = pytest.mark.timeout(30)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Slow(HttpFilter[EmptyConfig, NoState]):
    """Holds the request in an async hook until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def on_request_headers(self, request: Request, state: Any) -> None:
        self.entered.set()
        await self.release.wait()
        request.headers.set("x-done", "yes")


async def check(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status  # type: ignore[no-any-return]


def test_health_flips_before_drain_and_in_flight_stream_completes() -> None:
    slow = Slow()

    async def body() -> None:
        server = SidecarServer({"slow": Chain([slow], name="slow")}, address="127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            assert await check(channel, "") == SERVING
            assert await check(channel, SERVICE_NAME) == SERVING
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            )
            assert (await watch.read()).status == SERVING

            in_flight = asyncio.create_task(exchange(server.address, [request_headers()]))
            await asyncio.wait_for(slow.entered.wait(), 5)
            started = time.monotonic()
            stopping = asyncio.create_task(server.stop(grace=20))

            assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
            assert not in_flight.done() and not stopping.done()
            watch.cancel()

            slow.release.set()
            (response,) = await asyncio.wait_for(in_flight, 5)
            await asyncio.wait_for(stopping, 10)
        assert time.monotonic() - started < 10  # drained when the stream ended, not at the grace
        sets, _ = mutation_of(response.request_headers.response.header_mutation)
        assert sets == [("x-done", b"yes", "", "OVERWRITE_IF_EXISTS_OR_ADD")]

    run(body())


def test_drain_delay_keeps_answering_not_serving() -> None:
    async def body() -> None:
        server = SidecarServer({"a": Chain([])}, address="127.0.0.1:0", drain_delay=1.0)
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            assert await check(channel, SERVICE_NAME) == SERVING
            stopping = asyncio.create_task(server.stop(grace=1))
            await asyncio.wait_for(_until(lambda: not server.health.serving), 5)
            assert await check(channel, SERVICE_NAME) == NOT_SERVING
            assert await check(channel, "") == NOT_SERVING
            await asyncio.wait_for(stopping, 10)

    run(body())


def test_stream_still_running_after_grace_is_cancelled() -> None:
    slow = Slow()

    async def body() -> grpc.StatusCode:
        server = SidecarServer({"slow": Chain([slow])}, address="127.0.0.1:0")
        await server.start()
        in_flight = asyncio.create_task(exchange(server.address, [request_headers()]))
        await asyncio.wait_for(slow.entered.wait(), 5)
        await asyncio.wait_for(server.stop(grace=0.2), 5)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await asyncio.wait_for(in_flight, 5)
        return failure.value.code()

    assert run(body()) in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


def test_envoy_resetting_a_stream_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Envoy cancels the gRPC stream when the client goes away: quiet, and nothing counted."""
    slow = Slow()

    async def body() -> float:
        async with serve(Chain([slow])) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = pb_grpc.ExternalProcessorStub(channel).Process()
                await call.write(request_headers())
                await asyncio.wait_for(slow.entered.wait(), 5)
                call.cancel()
                assert await call.code() == grpc.StatusCode.CANCELLED
            slow.release.set()  # the next request passes straight through
            (response,) = await exchange(server.address, [request_headers()])  # still serving
            assert response.HasField("request_headers")
            return server.metrics.value("envoykit_stream_errors_total", reason="internal")

    with caplog.at_level(logging.WARNING):
        assert run(body()) == 0.0
    assert not [r for r in caplog.records if r.name.startswith("envoykit")]


def test_second_stop_without_grace_cancels_the_drain() -> None:
    slow = Slow()

    async def body() -> float:
        server = SidecarServer({"slow": Chain([slow])}, address="127.0.0.1:0")
        await server.start()
        in_flight = asyncio.create_task(exchange(server.address, [request_headers()]))
        await asyncio.wait_for(slow.entered.wait(), 5)
        started = time.monotonic()
        draining = asyncio.create_task(server.stop(grace=30))
        await asyncio.wait_for(_until(lambda: not server.health.serving), 5)
        await asyncio.wait_for(server.stop(None), 5)
        await asyncio.wait_for(draining, 5)
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(in_flight, 5)
        return time.monotonic() - started

    assert run(body()) < 10


async def _until(condition: Any, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)


class Hello(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: Any) -> None:
        request.headers.set("x-hello", "1")

    def on_response_headers(self, response: Response, state: Any) -> None:
        pass


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "ek.sock"

    async def body() -> Any:
        async with serve(Chain([Hello()]), address=f"unix:{path}") as server:
            assert server.address == f"unix:{path}" and server.port == 0
            assert path.exists()
            return await exchange(server.address, [request_headers(), response_headers()])

    first, _ = run(body())
    assert mutation_of(first.request_headers.response.header_mutation)[0][0][0] == "x-hello"
    assert not path.exists()  # removed on stop


def test_metrics_in_registry_and_http_endpoint() -> None:
    async def body() -> tuple[str, float, float, float]:
        async with serve(Chain([Hello()], name="web"), metrics_address="127.0.0.1:0") as server:
            for _ in range(2):
                await exchange(server.address, [request_headers(), response_headers()])
            url = f"http://127.0.0.1:{server.metrics_port}/metrics"
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
            value = server.metrics.value
            return (
                text,
                value("envoykit_streams_total", chain="web"),
                value("envoykit_filter_calls_total", chain="web", filter="hello", phase="response_headers"),
                value(
                    "envoykit_filter_duration_seconds_count",
                    chain="web",
                    filter="hello",
                    phase="request_headers",
                ),
            )

    text, streams, calls, observed = run(body())
    assert (streams, calls, observed) == (2.0, 2.0, 2.0)
    assert 'envoykit_filter_calls_total{chain="web",filter="hello",phase="request_headers"} 2.0' in text
    assert "envoykit_filter_duration_seconds_bucket" in text


def test_sidecar_thread_serves_from_a_sync_test() -> None:
    with SidecarThread({"default": Chain([Hello()])}, default_chain="default") as sidecar:
        assert sidecar.port > 0 and sidecar.address == f"127.0.0.1:{sidecar.port}"
        (response,) = run(exchange(sidecar.address, [request_headers()]))
        assert response.WhichOneof("response") == "request_headers"
        assert sidecar.registry.get_sample_value("envoykit_streams_total", {"chain": "default"}) == 1.0
    with pytest.raises(grpc.aio.AioRpcError):
        run(exchange(sidecar.address, [request_headers()], timeout=2))


def test_threads_model_stop_ends_its_worker_threads() -> None:
    """A stopped ``threads`` sidecar leaves no grpcio workers behind (an embedder that starts
    and stops sidecars, e.g. a test suite, must not accumulate threads)."""
    import threading

    def workers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("envoykit-rpc")]

    assert not workers()
    with SidecarThread({"default": Chain([Hello()])}, server_model="threads") as sidecar:
        (response,) = run(exchange(sidecar.address, [request_headers()]))
        assert response.WhichOneof("response") == "request_headers"
        assert workers(), "the request ran on a pool worker"
    assert not workers()


def test_sidecar_thread_reraises_bind_errors() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match="cannot listen"):
            SidecarThread({"a": Chain([])}, address=f"127.0.0.1:{port}").start()


def test_sidecar_thread_config_errors_raise_at_once() -> None:
    with pytest.raises(ConfigError, match="default chain"):
        SidecarThread({"a": Chain([])}, default_chain="b")
    with pytest.raises(ConfigError, match="port"):
        SidecarThread({"a": Chain([])}, address="127.0.0.1:99999")


def test_run_sidecar_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "cli.sock"
    script = textwrap.dedent(
        f"""
        from envoykit import Chain
        from envoykit.runtime import run_sidecar
        run_sidecar({{"a": Chain([])}}, address="unix:{path}", drain_seconds=2)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not path.exists():  # bounded wait for the socket to appear
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the sidecar did not start"
            time.sleep(0.02)

        async def healthy() -> int:
            async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
                return await check(channel, "")

        assert run(healthy()) == SERVING
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, output
        assert not path.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_warns_when_protobuf_is_not_upb(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(api_implementation, "Type", lambda: "python")

    async def body() -> None:
        async with serve(Chain([])):
            pass

    with caplog.at_level(logging.WARNING, logger="envoykit.runtime"):
        run(body())
    assert any("not 'upb'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", ListenAddress("127.0.0.1", 50051)),
        ("[::1]:0", ListenAddress("::1", 0)),
        ("unix:/run/ek.sock", ListenAddress("", 0, "/run/ek.sock")),
        ("unix:///run/ek.sock", ListenAddress("", 0, "/run/ek.sock")),
        (":9000", ListenAddress("127.0.0.1", 9000)),
        ("9000", ListenAddress("127.0.0.1", 9000)),
        ("0.0.0.0:80", ListenAddress("0.0.0.0", 80)),
    ],
)
def test_parse_listen_address(text: str, expected: ListenAddress) -> None:
    parsed = parse_listen_address(text)
    assert parsed == expected
    assert parse_listen_address(parsed.target) == parsed


@pytest.mark.parametrize(
    "text", ["", "unix:relative.sock", "::1:80", "host", "host:http", "[::1]80", "h:70000"]
)
def test_parse_listen_address_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_address(text)


def test_public_api() -> None:
    assert sorted(envoykit.extproc.__all__) == [
        "ATTRIBUTES_KEY",
        "CHAIN_METADATA_KEY",
        "DEFAULT_ADDRESS",
        "ExtProcService",
        "SERVICE_NAME",
        "SidecarMetrics",
        "SidecarServer",
        "SidecarThread",
        "build_attributes",
        "header_mutation",
        "headers_in",
        "immediate_response",
        "processing_mode",
        "raw_attributes",
        "run_sidecar",
        "split_host_port",
    ]
    for name in envoykit.extproc.__all__:
        assert getattr(envoykit.extproc, name) is not None
