"""ip-filter, rules and egress-allowlist, each run through a real Envoy twice: in the ext_proc
sidecar and compiled into Envoy as Wasm. Clients and the upstream must see the same exchanges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit import Chain
from envoykit.gateway._load import resolve_filter
from envoykit.testing import EchoUpstream, EnvoyFactory

from .conftest import wasm_bootstrap
from .test_matrix import UPSTREAM_BODY, _observe

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]


def xff(address: str) -> dict[str, str]:
    return {**UPSTREAM_BODY, "x-forwarded-for": f"{address}, 10.0.0.2"}


#: (chain specs, probes). A probe: (method, path, headers, body chunks, trailers or None).
CASES: dict[str, tuple[list[dict[str, Any]], list[tuple[Any, ...]]]] = {
    "ip-filter": (
        [
            {
                "filter": "ip-filter",
                "config": {
                    "allow": ["198.51.100.0/24", "2001:db8::/32"],
                    "deny": ["198.51.100.66"],
                    "xff_num_trusted_hops": 2,
                    "routes": [{"match": {"prefix": "/local"}, "allow": ["127.0.0.1"], "deny": []}],
                },
            }
        ],
        [
            ("GET", "/a", xff("198.51.100.7"), [], None),
            ("GET", "/a", xff("198.51.100.66"), [], None),
            ("GET", "/a", xff("203.0.113.1"), [], None),
            ("GET", "/a", xff("2001:db8::5"), [], None),
            ("GET", "/a", UPSTREAM_BODY, [], None),  # too few hops: the source address (127.0.0.1)
            ("GET", "/local", UPSTREAM_BODY, [], None),
        ],
    ),
    "rules": (
        [
            {
                "filter": "rules",
                "config": {
                    "policies": [
                        {
                            "name": "teapot",
                            "action": "DENY",
                            "rules": [{"to": [{"operation": {"paths": ["/status/418"]}}]}],
                        },
                        {
                            "name": "readers",
                            "action": "ALLOW",
                            "rules": [
                                {
                                    "from": [{"source": {"ipBlocks": ["127.0.0.0/8"]}}],
                                    "to": [
                                        {"operation": {"methods": ["GET", "HEAD"], "notPaths": ["/admin/*"]}}
                                    ],
                                },
                                {"when": [{"key": "request.headers[x-role]", "values": ["admin*"]}]},
                            ],
                        },
                    ]
                },
            }
        ],
        [
            ("GET", "/status/418", {**UPSTREAM_BODY, "x-role": "admin"}, [], None),
            ("GET", "/books", UPSTREAM_BODY, [], None),
            ("POST", "/books", UPSTREAM_BODY, [b"x"], None),
            ("POST", "/books", {**UPSTREAM_BODY, "x-role": "admin-eu"}, [b"x"], None),
            ("GET", "/admin/users", UPSTREAM_BODY, [], None),
        ],
    ),
    "egress-allowlist": (
        [{"filter": "egress-allowlist", "config": {"hosts": ["api.github.com", "*.googleapis.com:80"]}}],
        [
            ("GET", "/", {**UPSTREAM_BODY, "host": "api.github.com"}, [], None),
            ("GET", "/", {**UPSTREAM_BODY, "host": "storage.googleapis.com"}, [], None),
            ("GET", "/", {**UPSTREAM_BODY, "host": "storage.googleapis.com:8443"}, [], None),
            ("GET", "/", {**UPSTREAM_BODY, "host": "evil.example"}, [], None),
        ],
    ),
}

EXPECTED = {
    "ip-filter": [200, 403, 403, 200, 403, 200],
    "rules": [403, 200, 403, 200, 403],
    "egress-allowlist": [200, 200, 502, 502],
}


def _same_connection(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row without ``connection: close``: Envoy adds it when a Wasm filter answers before the
    request body was read (the connection cannot be reused); the answer itself is the same."""
    headers = [(k, v) for k, v in row[3] if (k, v) != ("connection", "close")]
    return (*row[:3], headers, *row[4:])


def _chain(specs: list[dict[str, Any]]) -> Chain:
    return Chain([resolve_filter(s["filter"])(s.get("config")) for s in specs], name="default")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sidecar_and_wasm_give_identical_exchanges(
    case: str,
    every_hook_wasm: Path,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    gateway_factory: Any,
) -> None:
    specs, probes = CASES[case]
    sidecar = gateway_factory(_chain(specs), access_log=False)
    in_sidecar = _observe(sidecar.url(""), echo_upstream, probes)

    envoy = envoy_factory(wasm_bootstrap(echo_upstream.port, every_hook_wasm, specs), ready_timeout=60)
    in_wasm = _observe(envoy.url(""), echo_upstream, probes)

    for wasm_row, sidecar_row in zip(in_wasm, in_sidecar, strict=True):
        assert _same_connection(wasm_row) == _same_connection(sidecar_row)
    assert [row[2] for row in in_wasm] == EXPECTED[case]
    if case == "rules":
        assert in_wasm[0][4] == b"RBAC: access denied"
    if case == "egress-allowlist":
        assert b"evil.example" in in_wasm[3][4]
