"""The in-proxy runtime gives the same answers as the in-process Harness (the sidecar's rules)."""

from __future__ import annotations

import json

import pytest

from envoykit import BodyMode, HttpFilter, NoState, Reply, Request, Response
from envoykit.inproxy import LogLevel
from envoykit.testing import Harness, UpstreamResponse
from envoykit_filters import AddHeaders, DenyPaths

from .fake_envoy import FakeHost, configure, request


class Rewrite(HttpFilter):
    def on_request_body(self, request: Request, state: NoState) -> None:
        request.body = request.body.upper() + b"!"

    def on_response_body(self, response: Response, state: NoState) -> None:
        response.body = b"<" + response.body + b">"


class Chunks(HttpFilter):
    request_body_mode = BodyMode.STREAMED

    def on_request_body(self, request: Request, state: NoState) -> None:
        request.body = b"[" + request.body + b"]"


class Trailers(HttpFilter):
    def on_request_trailers(self, request: Request, state: NoState) -> None:
        request.trailers.set("x-seen", request.trailers.get("x-sum", "none"))

    def on_response_trailers(self, response: Response, state: NoState) -> None:
        response.trailers.remove("x-secret")


class Boom(HttpFilter):
    def on_request_headers(self, request: Request, state: NoState) -> None:
        request.headers.set("x-partial", "1")
        raise RuntimeError("boom")


class Tagger(HttpFilter):
    def on_request_headers(self, request: Request, state: NoState) -> None:
        request.metadata["client"] = request.attributes.source_address
        request.headers.set("x-route", request.attributes.route_name or "-")


FILTERS = {
    "add-headers": AddHeaders,
    "deny-paths": DenyPaths,
    "rewrite": Rewrite,
    "chunks": Chunks,
    "trailers": Trailers,
    "boom": Boom,
    "tagger": Tagger,
}


def both(
    filters: list[dict],
    method: str = "GET",
    path: str = "/",
    *,
    body=(),
    trailers=None,
    upstream=(200, (), (b"ok",), None),
    properties=None,
):
    """Run one request through the in-proxy runtime (fake Envoy) and through the Harness."""
    host = FakeHost(properties=properties or {})
    runtime, ok = configure(host, FILTERS, {"filters": filters})
    assert ok, host.logs
    wasm = request(runtime, host, method, path, body=body, trailers=trailers, upstream=upstream)
    assert runtime.chain is not None
    status, headers, chunks, up_trailers = upstream
    harness = Harness(runtime.chain).request(
        method,
        path,
        body=list(body),
        trailers=dict(trailers) if trailers is not None else None,
        upstream=UpstreamResponse(
            status, dict(headers) or {}, list(chunks), dict(up_trailers) if up_trailers else None
        ),
    )
    return wasm, harness


def test_headers_added_both_ways():
    wasm, harness = both(
        [{"filter": "add-headers", "config": {"request": {"x-a": "1"}, "response": {"x-b": "2"}}}]
    )
    assert wasm.upstream.header("x-a") == harness.upstream_request.headers["x-a"] == "1"
    assert wasm.client.header("x-b") == harness.response.headers["x-b"] == "2"


def test_local_reply_matches_and_passes_back_through_earlier_filters():
    filters = [
        {"filter": "add-headers", "config": {"response": {"x-decorated": "yes"}}},
        {"filter": "deny-paths", "config": {"prefixes": ["/admin"], "body": "no\n"}},
    ]
    wasm, harness = both(filters, path="/admin")
    assert wasm.local_reply and harness.local_reply and wasm.upstream is None
    assert wasm.client.status == harness.status == 403
    assert wasm.client.body == harness.response.body == b"no\n"
    assert wasm.client.header("x-decorated") == "yes"
    assert wasm.client.header("content-type") == "text/plain"


def test_buffered_body_rewrite_fixes_content_length():
    wasm, harness = both(
        [{"filter": "rewrite"}], "POST", body=(b"ab", b"cd"), upstream=(200, (), (b"x", b"yz"), None)
    )
    assert wasm.upstream.body == harness.upstream_request.body == b"ABCD!"
    assert wasm.upstream.header("content-length") == harness.upstream_request.headers["content-length"] == "5"
    assert wasm.client.body == harness.response.body == b"<xyz>"
    assert wasm.client.header("content-length") == "5"


def test_streamed_chunks_are_processed_one_by_one_and_content_length_dropped():
    wasm, harness = both([{"filter": "chunks"}], "POST", body=(b"a", b"b", b"c"))
    assert wasm.upstream.body == harness.upstream_request.body == b"[a][b][c]"
    assert wasm.upstream.header("content-length") is None
    assert "content-length" not in harness.upstream_request.headers


def test_trailers_with_and_without_a_buffered_body():
    wasm, harness = both(
        [{"filter": "trailers"}, {"filter": "rewrite"}],
        "POST",
        body=(b"abc",),
        trailers=[("x-sum", "42")],
        upstream=(200, (), (b"ok",), [("x-secret", "s"), ("x-keep", "k")]),
    )
    assert wasm.upstream.body == harness.upstream_request.body == b"ABC!"
    assert dict(wasm.upstream.trailers)["x-seen"] == harness.upstream_request.trailers["x-seen"] == "42"
    assert dict(wasm.client.trailers) == {"x-keep": "k"}
    assert wasm.client.body == harness.response.body == b"<ok>"


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_filter_exception_follows_failure_mode(mode):
    wasm, harness = both([{"filter": "boom", "failure_mode": mode}])
    if mode == "closed":
        assert wasm.local_reply and wasm.client.status == harness.status == 500
        assert b"boom" not in wasm.client.body
    else:
        assert not wasm.local_reply and wasm.upstream.header("x-partial") is None
        assert harness.status == 200


def test_attributes_from_properties_and_metadata_as_filter_state():
    props = {("source", "address"): b"10.1.2.3:5555", ("xds", "route_name"): b"api-route"}
    wasm, _ = both([{"filter": "tagger"}], properties=props)
    assert wasm.upstream.header("x-route") == "api-route"
    assert json.loads(wasm.state[("envoykit.tagger",)]) == {"client": "10.1.2.3"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b"not json", "not JSON"),
        ({"filters": [{"filter": "nope"}]}, "filters[0].filter: no filter 'nope' in this module"),
        ({"filters": [{"filter": "deny-paths", "config": {"prefixes": []}}]}, "filters[0].config.prefixes"),
        ({"filters": [], "extra": 1}, "unknown field(s) ['extra']"),
    ],
)
def test_invalid_plugin_config_is_rejected_at_load_with_the_field(config, message):
    host = FakeHost()
    runtime, ok = configure(host, FILTERS, config)
    assert ok is False and runtime.chain is None
    assert host.logs[-1][0] == LogLevel.ERROR and message in host.logs[-1][1]


def test_async_hooks_are_rejected_at_load():
    class AsyncFilter(HttpFilter):
        async def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
            return None

    host = FakeHost()
    _, ok = configure(host, {"async": AsyncFilter}, {"filters": [{"filter": "async"}]})
    assert ok is False
    assert (
        "async hooks async-filter.on_request_headers can only run in the ext_proc/ext_authz sidecar"
        in host.logs[-1][1]
    )


def test_runtime_bug_fails_closed_not_into_envoy(monkeypatch):
    host = FakeHost()
    # (the runtime binds the host's header reader when it is made)
    monkeypatch.setattr(host, "get_headers", lambda map_type: (_ for _ in ()).throw(OSError("host broke")))
    runtime, _ = configure(
        host, FILTERS, {"filters": [{"filter": "add-headers", "config": {"request": {"x": "1"}}}]}
    )
    outcome = request(runtime, host)
    assert outcome.local_reply and outcome.client.status == 500
    assert any("in-proxy runtime error: OSError: host broke" in m for _, m in host.logs)


def test_properties_are_read_only_when_a_filter_uses_attributes():
    calls: list[tuple[str, ...]] = []

    class Counting(FakeHost):
        def get_property(self, path):
            calls.append(tuple(path))
            return super().get_property(path)

    host = Counting(properties={("xds", "route_name"): b"r1"})
    runtime, _ = configure(
        host, FILTERS, {"filters": [{"filter": "add-headers", "config": {"request": {"x": "1"}}}]}
    )
    request(runtime, host)
    assert calls == []  # add-headers never looks at attributes
    runtime, _ = configure(host, FILTERS, {"filters": [{"filter": "tagger"}]})
    outcome = request(runtime, host)
    assert ("xds", "route_name") in calls and outcome.upstream.header("x-route") == "r1"


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        # Request and response header hooks: callbacks 1 + 8; state dropped after the response headers.
        ([{"filter": "add-headers", "config": {"request": {"x": "1"}}}], 1 | 8),
        # Request hooks only: dropped after the request headers; response callbacks never enter Python.
        ([{"filter": "deny-paths", "config": {"prefixes": ["/admin"]}}], 1),
        # Bodies in both directions: every body and trailers callback, headers held.
        ([{"filter": "rewrite"}], 63),
        ([], 0),
    ],
)
def test_only_callbacks_the_chain_can_act_on_are_wanted_and_state_is_dropped_when_done(specs, expected):
    host = FakeHost()
    runtime, ok = configure(host, {**FILTERS, "rewrite": Rewrite}, {"filters": specs})
    assert ok and runtime.callbacks() == expected
    outcome = request(runtime, host, ctx=7)
    assert outcome.client.status == 200
    # Nothing is kept for a finished request, and the shim was told so (no proxy_on_delete needed).
    assert runtime._contexts == {}
    assert host.forgotten == ([7] if specs else [])


def test_a_local_reply_keeps_its_context_until_delete():
    host = FakeHost()
    runtime, _ = configure(
        host, FILTERS, {"filters": [{"filter": "deny-paths", "config": {"prefixes": ["/a"]}}]}
    )
    outcome = request(runtime, host, path="/a", ctx=9)
    assert outcome.local_reply and outcome.client.status == 403
    assert host.forgotten == [] and runtime._contexts == {}  # removed by on_delete, not before


def test_messages_the_runtime_makes_inline_match_the_engines():
    """The runtime builds request/response objects inline (its hot path); every slot must be
    set as ``Stream._start_request``/``_start_response`` set them, or a hook reading one breaks."""
    from envoykit import Chain, Headers
    from envoykit._messages import _Message

    seen: dict[str, object] = {}

    class Grab(HttpFilter):
        name = "grab"

        def on_request_headers(self, request, state):
            seen["request"] = request

        def on_response_headers(self, response, state):
            seen["response"] = response

    host = FakeHost()
    runtime, ok = configure(host, {"grab": Grab}, {"filters": [{"filter": "grab"}]})
    assert ok
    request(runtime, host)
    engine = Chain([Grab()]).stream()
    reference = {
        "request": engine._start_request(None, [], False),
        "response": engine._start_response(None, [], False),
    }
    for kind, message in seen.items():
        for slot in (*_Message.__slots__, *type(message).__slots__):
            assert hasattr(message, slot) == hasattr(reference[kind], slot), (kind, slot)
    assert isinstance(seen["request"].headers, Headers)
    assert seen["response"].request is seen["request"]
