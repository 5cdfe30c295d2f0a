"""What the rendered config does for security-headers (the `server` header) and for in-proxy
metadata in the access log (waf-log's captured headers)."""

from __future__ import annotations

import pytest

from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import parse_gateway
from envoykit.testing import validate_bootstrap

from .test_render import http_manager

BASE = """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
access_log: "-"
"""


def gateway(text: str):
    return parse_gateway(BASE + text)


def log_fields(bootstrap):
    return http_manager(bootstrap)["access_log"][0]["typed_config"]["log_format"]["json_format"]


def test_envoy_keeps_its_server_header_by_default():
    g = gateway("chains: {default: [{filter: add-headers}]}\nroutes: [{prefix: /, upstream: app}]\n")
    assert http_manager(render_bootstrap(g))["server_header_transformation"] == "OVERWRITE"


def test_security_headers_removing_server_passes_it_through():
    g = gateway("chains: {default: [{filter: security-headers}]}\nroutes: [{prefix: /, upstream: app}]\n")
    assert http_manager(render_bootstrap(g))["server_header_transformation"] == "PASS_THROUGH"


def test_security_headers_keeping_server_leaves_envoys_default():
    g = gateway(
        "chains: {default: [{filter: security-headers, config: {remove_identifying: [x-powered-by]}}]}\n"
        "routes: [{prefix: /, upstream: app}]\n"
    )
    assert http_manager(render_bootstrap(g))["server_header_transformation"] == "OVERWRITE"


def test_a_chain_no_route_uses_does_not_count():
    g = gateway(
        "chains: {default: [{filter: add-headers}], unused: [{filter: security-headers}]}\n"
        "routes: [{prefix: /, upstream: app}]\n"
    )
    assert http_manager(render_bootstrap(g))["server_header_transformation"] == "OVERWRITE"


IN_PROXY = """
in_proxy: {chain: edge, module: /tmp/edge.wasm}
chains:
  edge:
    - filter: waf-log
    - filter: security-headers
  api:
    - filter: waf-log
routes:
  - {prefix: /api, upstream: app, chain: api}
  - {prefix: /, upstream: app, chain: null}
"""


def test_in_proxy_chain_counts_for_the_server_header():
    assert http_manager(render_bootstrap(gateway(IN_PROXY)))["server_header_transformation"] == "PASS_THROUGH"


def test_in_proxy_metadata_is_printed_from_wasm_filter_state():
    fields = log_fields(render_bootstrap(gateway(IN_PROXY)))
    # The sidecar chain `api` also uses envoykit.waf-log: the in-proxy value goes under wasm.<ns>.
    assert fields["envoykit.waf-log"] == "%DYNAMIC_METADATA(envoykit.waf-log)%"
    assert fields["wasm.envoykit.waf-log"] == "%FILTER_STATE(wasm.envoykit.waf-log:PLAIN)%"
    assert fields["envoykit.security-headers"] == "%FILTER_STATE(wasm.envoykit.security-headers:PLAIN)%"


@pytest.mark.envoy
def test_rendered_config_with_the_new_fields_passes_envoy_validate():
    g = gateway(
        "chains: {default: [{filter: security-headers}, {filter: waf-log, config: {strip: true}}]}\n"
        "routes: [{prefix: /, upstream: app}]\n"
    )
    bootstrap = render_bootstrap(g)
    assert log_fields(bootstrap)["envoykit.waf-log"] == "%DYNAMIC_METADATA(envoykit.waf-log)%"
    validate_bootstrap(bootstrap)
