"""The gateway file's ``authz`` section: the rendered ext_authz filter (valid for Envoy, before
ext_proc), per-route opt-out, body forwarding, access-log fields, ``envoykit check``, and the
sidecar's services and server model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from envoykit import ConfigError
from envoykit.cli import app
from envoykit.envoyconfig import render_bootstrap
from envoykit.extauthz import gateway_services
from envoykit.gateway import parse_gateway
from envoykit.testing import validate_bootstrap

from .test_render import http_manager

GATEWAY = """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
access_log: "-"
chains:
  edge:
    - filter: ip-filter
      config: {allow: [10.0.0.0/8]}
    - filter: rules
      config:
        policies:
          - action: DENY
            rules: [{to: [{operation: {paths: [/status/418]}}]}]
  default:
    - filter: add-headers
      config: {request: {x-a: "1"}}
authz:
  chain: edge
  failure_mode_allow: true
  include_peer_certificate: true
  metadata_context_namespaces: [envoy.filters.http.jwt_authn]
routes:
  - {prefix: /health, upstream: app, authz: false}
  - {prefix: /, upstream: app}
"""


def filters(bootstrap):
    return http_manager(bootstrap)["http_filters"]


def test_ext_authz_filter_is_rendered_before_ext_proc_and_envoy_accepts_it():
    bootstrap = render_bootstrap(parse_gateway(GATEWAY))
    names = [f["name"] for f in filters(bootstrap)]
    assert names == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    authz = filters(bootstrap)[0]["typed_config"]
    assert authz["transport_api_version"] == "V3"
    assert authz["grpc_service"]["envoy_grpc"]["cluster_name"] == "envoykit_sidecar"
    assert authz["grpc_service"]["initial_metadata"] == [{"key": "x-envoykit-chain", "value": "edge"}]
    assert authz["failure_mode_allow"] is True and authz["include_peer_certificate"] is True
    assert authz["metadata_context_namespaces"] == ["envoy.filters.http.jwt_authn"]
    assert "with_request_body" not in authz  # no filter of the chain reads the body
    routes = http_manager(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    assert "envoy.filters.http.ext_authz" not in routes[1].get("typed_per_filter_config", {})
    fields = http_manager(bootstrap)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fields["envoykit.rules"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:envoykit.rules)%"
    validate_bootstrap(bootstrap)


AUTHZ_ONLY = GATEWAY.replace(
    '  default:\n    - filter: add-headers\n      config: {request: {x-a: "1"}}\n', ""
)


def test_authz_only_gateway_has_the_sidecar_cluster_and_no_ext_proc():
    text = AUTHZ_ONLY
    bootstrap = render_bootstrap(parse_gateway(text))
    assert [f["name"] for f in filters(bootstrap)] == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    clusters = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert "envoykit_sidecar" in clusters
    validate_bootstrap(bootstrap)


def test_with_request_body_is_rendered_when_asked():
    text = GATEWAY.replace(
        "  failure_mode_allow: true\n",
        "  failure_mode_allow: true\n"
        "  with_request_body: {max_request_bytes: 1024, allow_partial_message: true}\n",
    )
    authz = filters(render_bootstrap(parse_gateway(text)))[0]["typed_config"]
    assert authz["with_request_body"] == {
        "max_request_bytes": 1024,
        "allow_partial_message": True,
        "pack_as_bytes": True,
    }
    validate_bootstrap(render_bootstrap(parse_gateway(text)))


def test_services_and_server_model():
    both = parse_gateway(GATEWAY)
    services, model = gateway_services(both)
    assert len(services) == 2 and model == "aio"  # ext_proc streams too: the aio default
    services, model = gateway_services(parse_gateway(AUTHZ_ONLY))
    assert len(services) == 1 and model == "threads"  # measured faster for unary checks
    pinned = parse_gateway(AUTHZ_ONLY.replace("access_log", "sidecar: {server: aio}\naccess_log"))
    assert gateway_services(pinned)[1] == "aio"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("chain: edge", "chain: nope"), "authz.chain"),
        (
            ("include_peer_certificate: true", "include_peer_certificate: maybe"),
            "authz.include_peer_certificate",
        ),
        (("allow: [10.0.0.0/8]", "allow: [10.0.0.0/88]"), "chains.edge[0].config.allow"),
        (("failure_mode_allow: true", "status_on_error: 99"), "authz.status_on_error"),
    ],
)
def test_bad_authz_sections_fail_at_load(change, message):
    with pytest.raises(ConfigError) as info:
        parse_gateway(GATEWAY.replace(*change))
    assert message in str(info.value)


def test_envoykit_check_validates_the_authz_gateway(tmp_path: Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(GATEWAY)
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "edge (2 filters)" in result.output
    path.write_text(GATEWAY.replace("chain: edge", "chain: nope"))
    bad = CliRunner().invoke(app, ["check", str(path)])
    assert bad.exit_code == 2 and "authz.chain" in bad.output
