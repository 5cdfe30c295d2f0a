"""envoykit's HTTP ext_authz server spoken to directly (what Envoy's ``http_service`` sends),
and the gateway file's ``authz.protocol: http``: config validation and the rendered filter."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from envoykit import Chain, ConfigError, EmptyConfig, HttpFilter, NoState, Reply, Request
from envoykit.envoyconfig import render_bootstrap
from envoykit.extauthz import HttpAuthzService, http_authz_service
from envoykit.gateway import parse_gateway
from envoykit.runtime import SidecarThread
from envoykit.testing import validate_bootstrap

from ..envoyconfig.test_render import http_manager


class Decide(HttpFilter[EmptyConfig, NoState]):
    name = "decide"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        if request.path_only == "/deny":
            return Reply(403, b"no\n", headers={"x-reason": "path"})
        if request.path_only == "/boom":
            raise RuntimeError("boom")
        request.headers.set("x-client", request.attributes.source_address or "-")
        request.headers.set("x-authority", request.authority or "-")
        request.headers.remove("x-secret")
        return None


class AsyncDecide(HttpFilter[EmptyConfig, NoState]):
    name = "async-decide"

    async def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        await asyncio.sleep(0)
        request.headers.set("x-async", "yes")
        return None


@pytest.fixture
def server() -> Iterator[tuple[SidecarThread, HttpAuthzService]]:
    chains = {"authz": Chain([Decide()], name="authz"), "async": Chain([AsyncDecide()], name="async")}
    with SidecarThread(
        chains, default_chain="authz", services=[http_authz_service("127.0.0.1:0")], server_model="aio"
    ) as sidecar:
        service = sidecar.server.services[0]
        assert isinstance(service, HttpAuthzService)
        yield sidecar, service


def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send ``requests`` one after the other on one keep-alive connection; return the answers."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for request in requests:
            conn.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            while len(body) < length:
                body += conn.recv(65536)
            answers.append(head + b"\r\n\r\n" + body)
    return answers


def check(path: str, *headers: str, chain: str | None = None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "host: gw.example",
        "content-length: 0",
        "x-envoykit-client-address: 198.51.100.7:4242",
    ]
    if chain:
        lines.append(f"x-envoykit-chain: {chain}")
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def test_allow_returns_header_changes_and_removals(server):
    _, service = server
    (answer,) = exchange(service.port, check("/ok", "x-secret: s"))
    head = answer.decode()
    assert head.startswith("HTTP/1.1 200 OK")
    assert "x-client: 198.51.100.7\r\n" in head
    assert "x-authority: gw.example\r\n" in head
    assert "x-envoy-auth-headers-to-remove: x-secret\r\n" in head


def test_deny_boom_and_async_on_one_connection(server):
    sidecar, service = server
    deny, boom, async_, ok = exchange(
        service.port, check("/deny"), check("/boom"), check("/x", chain="async"), check("/ok")
    )
    assert (
        deny.startswith(b"HTTP/1.1 403 Forbidden")
        and b"x-reason: path" in deny
        and deny.endswith(b"\r\n\r\nno\n")
    )
    assert boom.startswith(b"HTTP/1.1 500")
    assert async_.startswith(b"HTTP/1.1 200") and b"x-async: yes" in async_
    assert ok.startswith(b"HTTP/1.1 200")
    metrics = generate_latest(sidecar.server.registry).decode()
    assert 'envoykit_authz_decisions_total{chain="authz",decision="deny",filter="decide"} 2.0' in metrics
    assert 'envoykit_authz_decisions_total{chain="async",decision="allow",filter=""} 1.0' in metrics


def test_unknown_chain_is_a_500(server):
    _, service = server
    (answer,) = exchange(service.port, check("/", chain="nope"))
    assert answer.startswith(b"HTTP/1.1 500")


def test_garbage_is_a_400(server):
    _, service = server
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as conn:
        conn.sendall(b"\x00\x01 not http\r\n\r\n")
        assert conn.recv(1024).startswith(b"HTTP/1.1 400")


GATEWAY = """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
chains:
  edge:
    - filter: ip-filter
      config: {allow: [10.0.0.0/8]}
authz:
  chain: edge
  protocol: http
  %s
routes:
  - {prefix: /health, upstream: app, authz: false}
  - {prefix: /, upstream: app}
sidecar: {authz_http_address: "127.0.0.1:50099"}
"""


def _filters(bootstrap):
    return http_manager(bootstrap)["http_filters"]


def test_http_protocol_renders_http_service_and_envoy_accepts_it():
    bootstrap = render_bootstrap(parse_gateway(GATEWAY % ""))
    authz = _filters(bootstrap)[0]["typed_config"]
    service = authz["http_service"]
    assert service["server_uri"]["cluster"] == "envoykit_authz_http"
    assert service["authorization_request"]["headers_to_add"][0] == {
        "key": "x-envoykit-chain",
        "value": "edge",
    }
    assert "grpc_service" not in authz
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert "envoykit_sidecar" not in clusters  # no ext_proc chain: no gRPC cluster
    address = clusters["envoykit_authz_http"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 50099}
    validate_bootstrap(bootstrap)


def test_configured_header_lists_are_rendered_and_valid():
    extra = (
        "allowed_headers: [authorization, x-*]\n  allowed_upstream_headers: [x-user]\n"
        "  allowed_client_headers: [www-authenticate, x-reason]"
    )
    bootstrap = render_bootstrap(parse_gateway(GATEWAY % extra))
    service = _filters(bootstrap)[0]["typed_config"]
    assert service["allowed_headers"]["patterns"] == [{"exact": "authorization"}, {"prefix": "x-"}]
    response = service["http_service"]["authorization_response"]
    assert response["allowed_upstream_headers"]["patterns"] == [{"exact": "x-user"}]
    assert response["allowed_client_headers"]["patterns"] == [
        {"exact": "www-authenticate"},
        {"exact": "x-reason"},
    ]
    validate_bootstrap(bootstrap)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("protocol: websocket", "protocol"),
        ("allowed_upstream_headers: ['bad name']", "allowed_upstream_headers"),
        ("allowed_headers: ['x-*-y']", "allowed_headers"),
    ],
)
def test_bad_http_settings_fail_at_load(extra, message):
    text = (GATEWAY % extra).replace("  protocol: http\n", "") if "protocol:" in extra else GATEWAY % extra
    with pytest.raises(ConfigError, match=message):
        parse_gateway(text)


def test_header_lists_need_the_http_protocol():
    text = (GATEWAY % "allowed_upstream_headers: [x-a]").replace("protocol: http", "protocol: grpc")
    with pytest.raises(ConfigError, match="only apply to protocol: http"):
        parse_gateway(text)


def test_docs_http_mode_example_renders_valid_config():
    import re
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "extauthz.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", page, flags=re.S) if "protocol: http" in b]
    validate_bootstrap(render_bootstrap(parse_gateway(block)))
