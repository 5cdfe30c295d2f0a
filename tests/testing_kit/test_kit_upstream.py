"""EchoUpstream, the raw client and the polling helpers, without Envoy."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from envoykit.testing import EchoUpstream, RawConnection, free_port, raw_request, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10.0) as c:
        yield c


# -- _net ---------------------------------------------------------------------------------------
def test_wait_for_returns_the_truthy_value() -> None:
    calls = iter([None, 0, "", "done"])
    assert wait_for(lambda: next(calls), timeout=5, interval=0.001, what="x") == "done"


def test_wait_for_names_what_and_the_last_error() -> None:
    def boom() -> None:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimeoutError, match=r"waiting for the thing.*nobody home"):
        wait_for(boom, timeout=0.05, what="the thing")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- echo ---------------------------------------------------------------------------------------
def test_echo_describes_the_request(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    resp = client.post(echo_upstream.url("/a/b?q=1"), content=b"hello", headers={"X-Mixed-Case": "v"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert (doc["method"], doc["path"], doc["http_version"]) == ("POST", "/a/b?q=1", "1.1")
    assert ["x-mixed-case", "v"] in doc["headers"]
    assert (doc["body"], doc["body_encoding"], doc["trailers"]) == ("hello", "utf-8", [])
    seen = echo_upstream.last
    assert seen.header("X-MIXED-CASE") == "v"
    assert seen.body == b"hello"
    assert echo_upstream.address == f"127.0.0.1:{echo_upstream.port}"


def test_binary_body_is_base64(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    doc = client.post(echo_upstream.url("/"), content=b"\xff\x00\xfe").json()
    assert doc["body_encoding"] == "base64"
    assert base64.b64decode(doc["body"]) == b"\xff\x00\xfe"


def test_chunked_body_with_trailers_is_decoded(echo_upstream: EchoUpstream) -> None:
    resp = raw_request(
        echo_upstream.url("/up"), "PUT", body=[b"one-", b"two-", b"three"], trailers={"x-checksum": "abc"}
    )
    doc = resp.json()
    assert doc["body"] == "one-two-three"
    assert doc["trailers"] == [["x-checksum", "abc"]]
    assert doc["chunk_sizes"] == [4, 4, 5]
    seen = echo_upstream.last
    assert seen.chunks == (b"one-", b"two-", b"three")
    assert seen.trailer("X-Checksum") == "abc"
    assert seen.header("transfer-encoding") == "chunked"


def test_between_chunks_sees_the_upstream_receive_chunk_one(echo_upstream: EchoUpstream) -> None:
    def after(index: int) -> None:
        # Deterministic proof of streaming: chunk 1 is at the upstream before chunk 2 is sent.
        echo_upstream.wait_for_body_bytes(b"first" if index == 0 else b"second", timeout=10)
        assert echo_upstream.received == []  # the request is not complete yet
        order.append(index)

    order: list[int] = []
    resp = raw_request(
        echo_upstream.url("/"), "POST", body=[b"first", b"second", b"third"], between_chunks=after
    )
    assert resp.json()["body"] == "firstsecondthird"
    assert order == [0, 1]


def test_response_controls(echo_upstream: EchoUpstream) -> None:
    resp = raw_request(
        echo_upstream.url("/"),
        headers={
            "x-echo-status": "418",
            "x-echo-header-x-added": "yes",
            "x-echo-trailer-x-done": "true",
            "x-echo-chunks": "3",
            "x-echo-body": "abcdefgh",
        },
    )
    assert (resp.status, resp.reason) == (418, "I'm a Teapot")
    assert resp.header("x-added") == "yes"
    assert resp.header("content-type") == "text/plain"
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.chunks == (b"ab", b"cde", b"fgh")
    assert resp.trailers == (("x-done", "true"),)


def test_content_type_can_be_overridden(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    resp = client.get(echo_upstream.url("/"), headers={"x-echo-header-content-type": "text/html"})
    assert resp.headers.get_list("content-type") == ["text/html"]


def test_gate_holds_the_rest_of_the_response(echo_upstream: EchoUpstream) -> None:
    with RawConnection("127.0.0.1", echo_upstream.port) as conn:
        conn.send_head("GET", "/", {"x-echo-gate": "g1", "x-echo-chunks": "3"}, content_length=0)
        conn.end()
        first = conn.read_chunk()
        assert first is not None and first.startswith(b'{"method": "GET"')
        echo_upstream.wait_for_gate("g1", timeout=10)
        echo_upstream.release("g1")
        resp = conn.read_response()
    assert len(resp.chunks) == 3
    assert resp.json()["path"] == "/"


def test_release_before_the_request_lets_it_through(echo_upstream: EchoUpstream) -> None:
    echo_upstream.release("early")
    resp = raw_request(echo_upstream.url("/"), headers={"x-echo-gate": "early"})
    assert resp.status == 200
    assert len(resp.chunks) == 2


def test_unreleased_gate_aborts_and_is_recorded() -> None:
    with EchoUpstream(gate_timeout=0.2) as upstream:
        with pytest.raises(ConnectionError, match="truncated"):
            raw_request(upstream.url("/"), headers={"x-echo-gate": "never"})
        assert upstream.errors == ["gate 'never' was not released within 0.2s; aborted"]


def test_healthz_is_not_recorded(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    resp = client.get(echo_upstream.url("/healthz"))
    assert (resp.status_code, resp.text) == (200, "ok")
    assert echo_upstream.received == []


def test_bad_control_gets_400(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    resp = client.get(echo_upstream.url("/"), headers={"x-echo-chunks": "many"})
    assert resp.status_code == 400
    assert "x-echo-chunks" in resp.text


def test_malformed_request_gets_400(echo_upstream: EchoUpstream) -> None:
    with socket.create_connection(("127.0.0.1", echo_upstream.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")
    assert echo_upstream.received == []
    assert echo_upstream.errors and echo_upstream.errors[0].startswith("malformed request")


def test_head_and_keep_alive(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    head = client.head(echo_upstream.url("/h"))
    assert head.status_code == 200
    assert head.content == b""
    for i in range(3):  # same pooled connection
        assert client.get(echo_upstream.url(f"/{i}")).json()["path"] == f"/{i}"
    assert [r.path for r in echo_upstream.wait_for_requests(4)] == ["/h", "/0", "/1", "/2"]


def test_expect_100_continue(echo_upstream: EchoUpstream) -> None:
    with RawConnection("127.0.0.1", echo_upstream.port) as conn:
        conn.send_head("POST", "/", {"expect": "100-continue"}, content_length=5)
        conn.send_chunk(b"hello")
        conn.end()
        resp = conn.read_response()  # the interim 100 is skipped
    assert (resp.status, resp.json()["body"]) == (200, "hello")


def test_wait_for_requests_times_out_clearly(echo_upstream: EchoUpstream) -> None:
    with pytest.raises(TimeoutError, match=r"2 request\(s\).*received 0"):
        echo_upstream.wait_for_requests(2, timeout=0.05)


def test_last_and_clear(echo_upstream: EchoUpstream, client: httpx.Client) -> None:
    with pytest.raises(AssertionError, match="no request"):
        _ = echo_upstream.last
    client.get(echo_upstream.url("/"))
    echo_upstream.clear()
    assert echo_upstream.received == []


def test_stop_is_bounded_with_an_open_connection() -> None:
    upstream = EchoUpstream().start()
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")  # never finished
        upstream.wait_for_body_bytes(b"abc", timeout=10)
        started = time.monotonic()
        upstream.stop()
        assert time.monotonic() - started < 5
        assert sock.recv(100) == b""  # closed by the server
    upstream.stop()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        upstream.start()
