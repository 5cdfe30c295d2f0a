"""The ext_proc sidecar through a real Envoy 1.40: what clients and upstreams actually see."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from envoykit import BodyMode, Chain, HttpFilter, NoState, Reply, Request, Response
from envoykit.testing import RawConnection, raw_request, wait_for
from envoykit_filters import AddHeaders, DenyPaths

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(90)]


def echoed(response) -> dict:
    """The echo upstream's JSON description of the request it received."""
    assert response.status_code == 200, response.text
    return response.json()


def header(echo: dict, name: str) -> str | None:
    values = [v for k, v in echo["headers"] if k == name]
    return values[0] if values else None


def test_request_header_added_before_the_upstream_sees_it(gateway_factory):
    gw = gateway_factory(AddHeaders({"request": {"x-added": "by-envoykit"}}))
    echo = echoed(gw.get("/hello", headers={"x-added": "spoofed-by-client"}))
    assert header(echo, "x-added") == "by-envoykit"
    assert gw.upstream.last.header_values("x-added") == ["by-envoykit"]


def test_response_header_added(gateway_factory):
    gw = gateway_factory(AddHeaders({"response": {"x-served-by": "envoykit"}}))
    response = gw.get("/")
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "envoykit"


def test_local_reply_never_reaches_the_upstream(gateway_factory):
    chain = Chain(
        [
            AddHeaders({"response": {"x-decorated": "yes"}}),
            DenyPaths({"prefixes": ["/admin"], "body": "nope\n"}),
        ]
    )
    gw = gateway_factory(chain)
    response = gw.get("/admin/users")
    assert response.status_code == 403
    assert response.text == "nope\n"
    assert response.headers["x-decorated"] == "yes"  # the reply went back through earlier filters
    assert gw.upstream.received == []
    assert gw.get("/fine").status_code == 200


class Rewrite(HttpFilter):
    """Buffered body rewrite, both directions; lengths change."""

    def on_request_body(self, request: Request, state: NoState) -> None:
        request.body = request.body.upper() + b"-and-more"

    def on_response_body(self, response: Response, state: NoState) -> None:
        data = json.loads(response.body)
        response.body = json.dumps({"upstream_saw": data["body"]}).encode()


def test_buffered_body_rewrite_keeps_content_length_right(gateway_factory):
    gw = gateway_factory(Rewrite())
    response = gw.request("POST", "/submit", content=b"hello")
    assert response.status_code == 200, response.text
    upstream = gw.upstream.last
    assert upstream.body == b"HELLO-and-more"
    assert upstream.header("content-length") == str(len(b"HELLO-and-more"))
    assert response.json() == {"upstream_saw": "HELLO-and-more"}
    assert response.headers["content-length"] == str(len(response.content))


@dataclass
class ChunkState:
    chunks: int = 0


SEEN_CHUNKS: list[bytes] = []  # request chunks the filter processed, in order


class Brackets(HttpFilter[object, ChunkState]):  # type: ignore[type-var]
    """Streamed: wraps every chunk, so the output shows how the body was delivered."""

    Config = HttpFilter.Config
    State = ChunkState
    request_body_mode = BodyMode.STREAMED
    response_body_mode = BodyMode.STREAMED

    def on_request_body(self, request: Request, state: ChunkState) -> None:
        state.chunks += 1
        if request.body:
            SEEN_CHUNKS.append(request.body)
            request.body = b"[" + request.body + b"]"

    def on_response_body(self, response: Response, state: ChunkState) -> None:
        if response.body:
            response.body = b"<" + response.body + b">"


def test_streamed_request_chunks_are_processed_as_they_arrive(gateway_factory):
    SEEN_CHUNKS.clear()
    gw = gateway_factory(Brackets())

    def between(index: int) -> None:
        # Chunk n+1 is sent only after the filter processed chunk n: buffering would deadlock,
        # and no two chunks can coalesce on the way.
        wait_for(lambda: len(SEEN_CHUNKS) > index, 10, what=f"the filter to see chunk {index + 1} alone")

    response = raw_request(gw.url("/upload"), "POST", body=[b"one", b"two", b"three"], between_chunks=between)
    assert response.status == 200
    assert gw.upstream.last.body == b"[one][two][three]"


def test_streamed_response_chunks_reach_the_client_before_the_upstream_finishes(gateway_factory):
    gw = gateway_factory(Brackets())
    conn = RawConnection("127.0.0.1", gw.envoy.listener_port())
    try:
        conn.send_head("GET", "/stream", {"x-echo-body": "abcdef", "x-echo-chunks": "3", "x-echo-gate": "g1"})
        conn.end()
        status, _, _ = conn.read_head()
        assert status == 200
        first = conn.read_chunk()  # arrives while the upstream is still held at the gate
        assert first == b"<ab>"
        gw.upstream.release("g1")
        rest = b""
        while (chunk := conn.read_chunk()) is not None:
            rest += chunk
        # After the gate the last two chunks may travel together; each delivery is wrapped.
        assert re.fullmatch(rb"(<[a-z]+>)+", rest) and rest.replace(b"<", b"").replace(b">", b"") == b"cdef"
    finally:
        conn.close()


class Trailers(HttpFilter):
    def on_request_trailers(self, request: Request, state: NoState) -> None:
        request.trailers.set("x-checksum-seen", request.trailers.get("x-checksum", "none"))

    def on_response_trailers(self, response: Response, state: NoState) -> None:
        response.trailers.set("x-envoykit-trailer", "added")
        response.trailers.remove("x-secret")


def test_request_and_response_trailers(gateway_factory):
    gw = gateway_factory(Trailers())
    response = raw_request(
        gw.url("/t"),
        "POST",
        headers={"x-echo-trailer-x-upstream": "1", "x-echo-trailer-x-secret": "s"},
        body=[b"abc"],
        trailers={"x-checksum": "900150983cd24fb0"},
    )
    assert response.status == 200
    assert gw.upstream.last.trailer("x-checksum-seen") == "900150983cd24fb0"
    trailers = dict(response.trailers)
    assert trailers["x-upstream"] == "1"
    assert trailers["x-envoykit-trailer"] == "added"
    assert "x-secret" not in trailers


class Explodes(HttpFilter):
    def on_request_headers(self, request: Request, state: NoState) -> None:
        request.headers.set("x-partial", "1")
        raise RuntimeError("database password is hunter2")


def test_filter_exception_fail_closed(gateway_factory, caplog):
    gw = gateway_factory(Chain([AddHeaders({"response": {"x-outer": "1"}}), Explodes()]))
    response = gw.get("/")
    assert response.status_code == 500
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-outer"] == "1"
    assert gw.upstream.received == []
    assert any("failing closed" in r.getMessage() for r in caplog.records)
    errors = gw.sidecar.registry.get_sample_value(
        "envoykit_filter_errors_total", {"chain": "default", "filter": "explodes", "phase": "request_headers"}
    )
    assert errors == 1


def test_filter_exception_fail_open(gateway_factory, caplog):
    gw = gateway_factory(Chain([Explodes(failure_mode="open"), AddHeaders({"request": {"x-after": "1"}})]))
    echo = echoed(gw.get("/"))
    assert header(echo, "x-partial") is None  # the failing hook's changes were undone
    assert header(echo, "x-after") == "1"  # later filters still ran
    assert any("failing open" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("allow", [True, False])
def test_sidecar_down_follows_failure_mode_allow(gateway_factory, allow):
    gw = gateway_factory(
        AddHeaders({"request": {"x-a": "1"}}), failure_mode_allow=allow, message_timeout_ms=2000
    )
    assert gw.get("/").status_code == 200
    gw.stop_sidecar()
    response = gw.get("/after")
    if allow:
        assert response.status_code == 200
        assert gw.upstream.last.path == "/after" and gw.upstream.last.header("x-a") is None
    else:
        assert response.status_code == 500
        assert all(r.path != "/after" for r in gw.upstream.received)


def test_per_route_chain_selection(gateway_factory):
    chains = {
        "default": Chain([AddHeaders({"request": {"x-chain": "default"}})], name="default"),
        "api": Chain([AddHeaders({"request": {"x-chain": "api"}})], name="api"),
    }
    gw = gateway_factory(
        chains,
        routes=[{"prefix": "/api", "chain": "api"}, {"prefix": "/raw", "chain": None}, {"prefix": "/"}],
    )
    assert header(echoed(gw.get("/api/x")), "x-chain") == "api"
    assert header(echoed(gw.get("/web")), "x-chain") == "default"
    assert header(echoed(gw.get("/raw")), "x-chain") is None
    streams = gw.sidecar.registry.get_sample_value("envoykit_streams_total", {"chain": "api"})
    assert streams == 1


class Tagger(HttpFilter):
    def on_request_headers(self, request: Request, state: NoState) -> None:
        request.metadata["client"] = request.attributes.source_address
        request.metadata["route"] = request.attributes.route_name
        request.metadata["tags"] = ["a", "b"]


def test_dynamic_metadata_and_attributes_reach_the_access_log(gateway_factory):
    gw = gateway_factory(Tagger(), routes=[{"prefix": "/", "name": "main-route"}])
    assert gw.get("/").status_code == 200
    line = json.loads(gw.envoy.access_log_lines(min_lines=1)[-1])
    assert line["envoykit.tagger"] == {"client": "127.0.0.1", "route": "main-route", "tags": ["a", "b"]}


def test_unix_socket_transport(gateway_factory):
    gw = gateway_factory(AddHeaders({"request": {"x-via": "uds"}}), transport="unix")
    assert gw.sidecar.address.startswith("unix:")
    assert header(echoed(gw.get("/")), "x-via") == "uds"


def test_phases_a_chain_does_not_use_are_never_sent(gateway_factory):
    gw = gateway_factory(AddHeaders({"request": {"x-a": "1"}}))  # request headers only
    for _ in range(3):
        assert gw.get("/").status_code == 200
    calls = gw.sidecar.registry.get_sample_value(
        "envoykit_filter_calls_total",
        {"chain": "default", "filter": "add-headers", "phase": "request_headers"},
    )
    assert calls == 3
    # Envoy's own counters: no response-phase messages were exchanged with the sidecar.
    wait_for(lambda: gw.envoy.stat("http.ingress.ext_proc.streams_started") >= 3, 5, what="ext_proc stats")
    assert gw.envoy.stat("http.ingress.ext_proc.streams_started") == 3


class AsyncLookup(HttpFilter):
    """An async hook, as a filter calling a token service would have."""

    async def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        import asyncio

        await asyncio.sleep(0.01)  # stands in for network I/O
        if request.headers.get("authorization") != "Bearer ok":
            return Reply(401, "who are you?\n", {"www-authenticate": "Bearer"})
        request.headers.set("x-user", "alice")
        return None


def test_async_hooks_run_in_the_sidecar(gateway_factory):
    gw = gateway_factory(AsyncLookup())
    denied = gw.get("/")
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert header(echoed(gw.get("/", headers={"authorization": "Bearer ok"})), "x-user") == "alice"


def test_normal_requests_log_no_errors(gateway_factory, caplog):
    """A stream Envoy closes after its last phase is a normal end, in both server models."""
    gw = gateway_factory(AddHeaders({"request": {"x-a": "1"}, "response": {"x-b": "2"}}))
    for _ in range(5):
        assert gw.get("/").status_code == 200
    gw.stop_sidecar()  # let every stream finish before looking at the log
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    assert gw.sidecar.registry.get_sample_value("envoykit_stream_errors_total", {"reason": "internal"}) in (
        None,
        0,
    )
