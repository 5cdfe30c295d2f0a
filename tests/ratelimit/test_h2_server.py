"""The native HTTP/2 server (``RateLimitServer(server="h2")``) seen from real clients: grpcio's
client, curl (HTTP/2 prior knowledge) for framings grpcio never sends, and raw sockets writing
HTTP/2 frames by hand (garbage, a client that leaves mid-call, a graceful stop mid-call)."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit import ConfigError
from envoykit.ratelimit import Hit, Limiter, MemoryBackend, RateLimitServer, _server, load_directory
from envoykit.runtime import _h2
from envoykit.runtime._h2 import H2BuildError
from envoykit.testing._net import wait_for

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
NOW = 1_800_000_000.0 + 1800.5
METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
CONFIG = """\
domain: api
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
"""


def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rls"
    directory.mkdir()
    (directory / "api.yaml").write_text(CONFIG)
    return directory


def request(key: str = "tenant", value: str = "a") -> rls_pb2.RateLimitRequest:
    r = rls_pb2.RateLimitRequest(domain="api")
    r.descriptors.add().entries.add(key=key, value=value)
    return r


@pytest.fixture
def rls_server_kind() -> str:
    """Every test here is about the h2 server (no grpcio variant of ``rls_factory``)."""
    return "h2"


@pytest.fixture
def h2(tmp_path: Path, rls_factory: Any) -> Any:
    return lambda **options: rls_factory(config_dir(tmp_path), server="h2", clock=lambda: NOW, **options)


# -- raw HTTP/2 ------------------------------------------------------------------------------


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (short strings)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
HEADERS = b"".join(
    literal(n, v)
    for n, v in (
        (":method", "POST"),
        (":scheme", "http"),
        (":path", METHOD),
        (":authority", "rls"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    )
)
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def grpc_message(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class RawH2:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """(type, flags, stream, payload), or None once the server closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
                    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    return head[3], head[4], stream, head[9:]
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk

    def until(self, kind: int, flags: int = 0) -> list[tuple[int, int, int, bytes]]:
        """Frames up to and including the first of ``kind`` with ``flags`` set."""
        seen = []
        while (f := self.read_frame()) is not None:
            seen.append(f)
            if f[0] == kind and f[1] & flags == flags:
                return seen
        raise AssertionError(f"connection closed before a frame of type {kind}: {seen}")

    def close(self) -> None:
        self.sock.close()


def closes(port: int, data: bytes) -> bool:
    """Send ``data`` on a fresh connection: does the server end the connection?"""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        while chunk := s.recv(65536):
            del chunk
        return True


class Gate(MemoryBackend):
    """A memory backend whose first ``hit`` blocks until ``release`` (a decision in progress)."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: NOW)
        self.entered = threading.Event()
        self.release = threading.Event()

    def hit(self, hits: Sequence[Hit]) -> list[tuple[int, int]]:
        self.entered.set()
        assert self.release.wait(10)
        return super().hit(hits)


# -- through grpcio's client -----------------------------------------------------------------


def test_decisions_and_headers_over_grpcio_client(h2: Any, rls_client: Any) -> None:
    rls = h2()
    assert rls.server.server_kind == "h2"
    client = rls_client(rls.address)
    answers = [client.ask("api", [[("user", "u")]]) for _ in range(3)]
    assert [a.overall_code for a in answers] == [OK, OK, OVER]
    assert {h.key: h.value for h in answers[2].response_headers_to_add} == {
        "ratelimit-limit": "2",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "1800",
        "retry-after": "1800",
    }
    assert answers[0].statuses[0].current_limit.requests_per_unit == 2


def test_unknown_method_is_unimplemented(h2: Any) -> None:
    rls = h2()
    with grpc.insecure_channel(rls.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/Nope")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Nope" in info.value.details()
        # Not a RateLimitRequest: an error status, and the server keeps answering.
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"\xff\xff\xff", timeout=5)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request(), timeout=5)
        assert reply.overall_code == OK


def test_oversized_message_is_resource_exhausted(h2: Any) -> None:
    rls = h2()
    with grpc.insecure_channel(rls.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(METHOD)(b"\0" * (5 * 1024 * 1024), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_check(h2: Any) -> None:
    rls = h2()
    with grpc.insecure_channel(rls.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "envoy.service.ratelimit.v3.RateLimitService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_many_concurrent_streams_and_connections_decide_exactly(h2: Any) -> None:
    """2,400 calls in flight at once over 4 connections against a limit of 1,000: exactly 1,000
    are allowed, every call gets its own answer."""
    rls = h2()
    channels = [
        grpc.insecure_channel(rls.address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)
    ]
    try:
        stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
        futures = [stubs[i % 4].ShouldRateLimit.future(request(), timeout=30) for i in range(2400)]
        codes = [f.result().overall_code for f in futures]
    finally:
        for c in channels:
            c.close()
    assert codes.count(OK) == 1000
    assert codes.count(OVER) == 1400
    assert rls.server.limiter.stats.get("api.tenant", "total_hits") == 2400


# -- framings grpcio never sends (curl) ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"\x01\0\0\0\0", "application/grpc", "grpc-status: 12"),  # compressed flag
        (b"\0\0\0\0\x09abc", "application/grpc", "grpc-status: 13"),  # prefix longer than body
        (grpc_message(b"") * 2, "application/grpc", "grpc-status: 13"),  # two messages: not unary
        (b"", "application/grpc", "grpc-status: 13"),  # no message at all
        (grpc_message(b""), "text/plain", "HTTP/2 415"),  # not gRPC
    ],
)
def test_malformed_calls_get_an_error_status(
    h2: Any, tmp_path: Path, body: bytes, content_type: str, expected: str
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    rls = h2()
    (tmp_path / "body").write_bytes(body)
    headers = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-H", f"content-type: {content_type}", "--data-binary",
         f"@{tmp_path / 'body'}", "-D", "-", "-o", "/dev/null", f"http://{rls.address}{METHOD}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert expected in headers, headers
    with grpc.insecure_channel(rls.address) as channel:
        assert (
            rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request(), timeout=5).overall_code
            == OK
        )


# -- raw sockets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 4, PREFACE + b"\xff" * 64],
    ids=["http1", "binary", "bad-frame-after-preface"],
)
def test_garbage_closes_that_connection_only(h2: Any, garbage: bytes) -> None:
    rls = h2()
    with grpc.insecure_channel(rls.address) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        assert stub.ShouldRateLimit(request(), timeout=5).overall_code == OK
        assert closes(rls.server.port, garbage)
        assert stub.ShouldRateLimit(request(), timeout=5).overall_code == OK


def test_client_leaving_mid_request_and_mid_decision(tmp_path: Path, rls_factory: Any) -> None:
    gate = Gate()
    rls = rls_factory(config_dir(tmp_path), server="h2", backend=gate, clock=lambda: NOW)
    port = rls.server.port
    body = grpc_message(request().SerializeToString())
    # 1. Headers and half the message, then gone.
    raw = RawH2(port)
    raw.send(PREFACE + frame(1, END_HEADERS, 1, HEADERS) + frame(0, 0, 1, body[:4]))
    raw.close()
    # 2. A whole call, gone while the server decides it.
    raw = RawH2(port)
    raw.send(PREFACE + frame(1, END_HEADERS, 1, HEADERS) + frame(0, END_STREAM, 1, body))
    assert gate.entered.wait(10)
    raw.close()
    gate.release.set()
    with grpc.insecure_channel(rls.address) as channel:
        reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request(), timeout=5)
    assert reply.overall_code == OK
    assert reply.statuses[0].limit_remaining == 998  # the abandoned decision was counted
    assert rls.server._h2 is not None
    wait_for(lambda: rls.server._h2.stats()["connections"] == 0, timeout=10, what="connections closed")


def test_graceful_stop_finishes_the_call_in_flight(tmp_path: Path, rls_factory: Any) -> None:
    """GOAWAY names the last stream; a call that was mid-upload still gets its answer; then the
    connection closes and the port stops accepting."""
    rls = rls_factory(config_dir(tmp_path), server="h2", clock=lambda: NOW)
    port = rls.server.port
    raw = RawH2(port)
    raw.send(PREFACE + frame(1, END_HEADERS, 1, HEADERS) + frame(6, 0, 0, b"12345678"))
    raw.until(6, ACK)  # the server has read the HEADERS
    stopper = threading.Thread(target=rls.stop, args=(10.0,))
    stopper.start()
    goaway = raw.until(7)[-1]
    assert int.from_bytes(goaway[3][:4], "big") == 1  # last stream id
    raw.send(frame(0, END_STREAM, 1, grpc_message(request().SerializeToString())))
    frames = raw.until(1, END_STREAM)
    data = b"".join(f[3] for f in frames if f[0] == 0 and f[2] == 1)
    assert rls_pb2.RateLimitResponse.FromString(data[5:]).overall_code == OK
    assert raw.read_frame() is None  # the server closed the connection
    raw.close()
    stopper.join(15)
    assert not stopper.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- choosing the server ----------------------------------------------------------------------


def test_server_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    directory = config_dir(tmp_path)
    with pytest.raises(ConfigError, match="server: 'nghttp': expected auto, h2 or grpcio"):
        RateLimitServer(directory, server="nghttp")  # type: ignore[arg-type]

    def missing() -> None:
        raise H2BuildError("cannot load libnghttp2.so.14 (apt-get install libnghttp2-14)")

    monkeypatch.setattr(_server, "load_extension", missing)
    with pytest.raises(H2BuildError, match="libnghttp2"):
        RateLimitServer(directory, server="h2")
    assert RateLimitServer(directory, server="auto").server_kind == "grpcio"
    assert "serving with grpcio: cannot load libnghttp2" in caplog.text


def test_build_error_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_h2.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    with pytest.raises(H2BuildError, match=r"Python\.h not found .* \(install python3-dev\)"):
        _h2.build_extension()


def test_build_is_cached_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _h2.build_extension()
    assert path.is_file()
    assert _h2.build_extension() == path  # cached: same key, no compile


# -- batches decide like one call at a time --------------------------------------------------


def test_batch_decides_like_sequential_calls(tmp_path: Path) -> None:
    config = load_directory(config_dir(tmp_path))
    calls = [("api", [(("user", f"u{i % 3}"),)], 1 + i % 2, None) for i in range(12)]
    calls.append(("api", [(("tenant", "t"),), (("user", "u0"),)], 1, [(1, "minute"), None]))
    calls.append(("other", [(("user", "u0"),)], 1, None))
    one = Limiter(MemoryBackend(lambda: NOW), clock=lambda: NOW)
    batch = Limiter(MemoryBackend(lambda: NOW), clock=lambda: NOW)
    expected = [one.decide(config, *c) for c in calls]
    assert batch.decide_batch(config, calls) == expected
    assert batch.stats.by_key == one.stats.by_key


def test_batch_backend_failure_fails_each_limited_call(tmp_path: Path, silent_redis_url: str) -> None:
    from envoykit.ratelimit import RedisBackend

    config = load_directory(config_dir(tmp_path))
    limiter = Limiter(RedisBackend(silent_redis_url, timeout=0.05), failure_mode="closed", clock=lambda: NOW)
    decisions = limiter.decide_batch(
        config, [("api", [(("user", "a"),)], 1, None)] * 3 + [("api", [(("nothing", "x"),)], 1, None)]
    )
    assert [d.over_limit for d in decisions] == [True, True, True, False]
    assert limiter.stats.backend_errors == 3


@pytest.fixture
def silent_redis_url() -> Any:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_concurrent_h2_and_grpcio_servers_share_redis(
    tmp_path: Path, rls_factory: Any, redis_server: Any
) -> None:
    """Both servers against one Redis: one limit, whichever server answers."""
    directory = config_dir(tmp_path)
    servers = [
        rls_factory(directory, server=kind, redis_url=redis_server.url, clock=lambda: NOW)
        for kind in ("h2", "grpcio")
    ]
    channels = [grpc.insecure_channel(s.address) for s in servers]
    try:
        stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda i: stubs[i % 2].ShouldRateLimit(request("user", "x"), timeout=5).overall_code,
                    range(20),
                )
            )
    finally:
        for c in channels:
            c.close()
    assert codes.count(OK) == 2


# -- the command line -------------------------------------------------------------------------


def test_cli_serves_with_h2_and_stops_on_sigterm(tmp_path: Path) -> None:
    from envoykit.testing._net import free_port

    port = free_port()
    envoykit = Path(sys.executable).with_name("envoykit")
    proc = subprocess.Popen(
        [str(envoykit), "ratelimit", "serve", "--config-dir", str(config_dir(tmp_path)), "--host",
         "127.0.0.1", "--port", str(port), "--server", "h2", "--log-level", "info"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            reply = rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(request("user"), timeout=5)
        assert reply.overall_code == OK
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "with the h2 server" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_rejects_an_unknown_server(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from envoykit.cli._app import app

    result = CliRunner().invoke(
        app, ["ratelimit", "serve", "--config-dir", str(config_dir(tmp_path)), "--server", "nghttp"]
    )
    assert result.exit_code == 2
    assert "server: 'nghttp': expected auto, h2 or grpcio" in result.output
