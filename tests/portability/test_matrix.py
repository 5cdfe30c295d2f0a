"""The portability matrix: each chain runs through a real Envoy twice, in the sidecar and compiled
into Envoy as Wasm, and every probe must see the same status, headers, body and trailers on the
client side, and the same request at the upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit import Chain
from envoykit.gateway._load import resolve_filter
from envoykit.testing import EchoUpstream, EnvoyFactory, raw_request

from .conftest import wasm_bootstrap

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

MODULE = Path(__file__).with_name("every_hook.py")
VOLATILE = {"date", "x-request-id", "x-envoy-upstream-service-time", "x-envoy-expected-rq-timeout-ms", "host"}
UPSTREAM_BODY = {"x-echo-body": "from-upstream"}

#: (chain specs, probes). A probe: (method, path, headers, body chunks, trailers or None).
MATRIX: dict[str, tuple[list[dict[str, Any]], list[tuple[Any, ...]]]] = {
    "every-hook+explode-open": (
        [
            {"filter": "every-hook", "config": {"tag": "t1"}},
            {"filter": "explode", "failure_mode": "open"},
        ],
        [
            ("GET", "/hello", {**UPSTREAM_BODY, "x-drop-me": "1"}, [], None),
            ("POST", "/submit", UPSTREAM_BODY, [b"hello"], None),
            (
                "POST",
                "/chunked",
                {**UPSTREAM_BODY, "x-echo-trailer-x-secret": "s", "x-echo-trailer-x-keep": "k"},
                [b"ab", b"cd"],
                {"x-checksum": "1"},
            ),
            ("GET", "/deny", {}, [], None),
            ("GET", "/explode", UPSTREAM_BODY, [], None),
        ],
    ),
    # Two fail-closed filters: the header hooks run in the shim's C loop (namespace switch per
    # filter), which hands over to Python at a reply (first filter) or an exception (second
    # filter, after the first changed headers).
    "every-hook+explode-closed": (
        [
            {"filter": "every-hook", "config": {"tag": "t2"}},
            {"filter": "explode", "failure_mode": "closed"},
        ],
        [
            ("GET", "/hello", {**UPSTREAM_BODY, "x-drop-me": "1"}, [], None),
            ("GET", "/deny", {}, [], None),
            ("GET", "/explode", UPSTREAM_BODY, [], None),
            ("POST", "/submit", UPSTREAM_BODY, [b"hello"], None),
        ],
    ),
    "explode-closed": (
        [{"filter": "explode", "failure_mode": "closed"}],
        [("GET", "/explode", UPSTREAM_BODY, [], None), ("GET", "/fine", UPSTREAM_BODY, [], None)],
    ),
}


def _classes() -> dict[str, Any]:
    return {
        name: resolve_filter(f"{MODULE}:{cls}")
        for name, cls in (("every-hook", "EveryHook"), ("explode", "Explode"))
    }


def _chain(specs: list[dict[str, Any]]) -> Chain:
    classes = _classes()
    return Chain(
        [classes[s["filter"]](s.get("config"), failure_mode=s.get("failure_mode", "closed")) for s in specs],
        name="default",
    )


def _observe(url: str, upstream: EchoUpstream, probes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    seen = []
    for method, path, headers, body, trailers in probes:
        upstream.clear()
        # No chunks: a plain request (content-length); several, or trailers: chunked encoding.
        payload = body if len(body) > 1 or trailers is not None else b"".join(body)
        response = raw_request(url + path, method, headers=headers, body=payload, trailers=trailers)
        got = upstream.received
        upstream_view = None
        if got:
            kept = sorted((k, v) for k, v in got[0].headers if k not in VOLATILE)
            upstream_view = (got[0].method, got[0].path, kept, got[0].body, sorted(got[0].trailers))
        client_headers = sorted((k, v) for k, v in response.headers if k not in VOLATILE)
        seen.append(
            (
                method,
                path,
                response.status,
                client_headers,
                response.body,
                sorted(response.trailers),
                upstream_view,
            )
        )
    return seen


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_sidecar_and_wasm_give_identical_exchanges(
    case: str,
    every_hook_wasm: Path,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    gateway_factory: Any,
) -> None:
    specs, probes = MATRIX[case]
    sidecar = gateway_factory(_chain(specs), access_log=False)
    in_sidecar = _observe(sidecar.url(""), echo_upstream, probes)

    bootstrap = wasm_bootstrap(echo_upstream.port, every_hook_wasm, specs)
    envoy = envoy_factory(bootstrap, ready_timeout=60)
    in_wasm = _observe(envoy.url(""), echo_upstream, probes)

    for wasm_row, sidecar_row in zip(in_wasm, in_sidecar, strict=True):
        assert wasm_row == sidecar_row
    if case == "every-hook+explode-open":
        # The filter's own counter, in both metric systems: Envoy's /stats and the sidecar's Prometheus.
        requests = sum(1 for _, path, *_ in probes)
        assert envoy.stat("wasmcustom.envoykit.every_hook.requests") == requests
        assert sidecar.sidecar.registry.get_sample_value("envoykit_every_hook_requests_total") == requests
    if case == "every-hook+explode-open":
        hello, submit, chunked, deny, explode = in_wasm
        assert hello[2] == 200 and hello[4] == b"[from-upstream]" and ("x-tag", "t1") in hello[6][2]
        assert not any(k == "x-drop-me" for k, _ in hello[6][2])
        assert submit[6][3] == b"HELLO|t1" and ("content-length", "8") in submit[6][2]
        assert chunked[6][3] == b"ABCD|t1" and ("x-body-bytes", "4") in chunked[6][4]
        assert ("x-keep", "k") in chunked[5] and not any(k == "x-secret" for k, _ in chunked[5])
        # The reply passed back through every-hook's response hooks, body hook included.
        assert deny[2] == 451 and deny[4] == b"[unavailable\n]" and deny[6] is None
        assert explode[2] == 200 and not any(k == "x-half-done" for k, _ in explode[6][2])
    elif case == "every-hook+explode-closed":
        hello, deny, explode, submit = in_wasm
        assert hello[2] == 200 and ("x-tag", "t2") in hello[6][2]
        assert deny[2] == 451 and deny[4] == b"[unavailable\n]" and deny[6] is None
        assert explode[2] == 500 and explode[6] is None
        assert submit[2] == 200 and submit[6][3] == b"HELLO|t2"
    else:
        explode, fine = in_wasm
        assert explode[2] == 500 and explode[6] is None
        assert fine[2] == 200
        # Python logging inside the VM reaches Envoy's log (traceback included).
        envoy.wait_for_log("filter 'explode' raised in on_request_headers", timeout=10)
        assert "RuntimeError: boom" in envoy.log_text()
