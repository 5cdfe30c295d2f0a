"""Rendered bootstraps: derived from the chains, and accepted by `envoy --mode validate`."""

import pytest
import yaml
from typer.testing import CliRunner

from envoykit.cli import app
from envoykit.envoyconfig import render_bootstrap, sidecar_address
from envoykit.gateway import parse_gateway
from envoykit.testing import validate_bootstrap

GATEWAY = """
sidecar: {address: "SIDECAR", failure_mode_allow: true, message_timeout_ms: 250}
upstreams:
  app: {url: "http://127.0.0.1:8080"}
  grpc: {url: "http://localhost:9000", http2: true}
chains:
  default:
    - filter: add-headers
      config: {request: {x-a: "1"}}
  api:
    - filter: deny-paths
      config: {prefixes: [/api/admin]}
  empty: []
routes:
  - {prefix: /api, upstream: app, chain: api}
  - {path: /static/app.js, upstream: app, chain: null}
  - {prefix: /empty, upstream: app, chain: empty}
  - {prefix: /grpc, upstream: grpc}
  - {prefix: /, upstream: app, name: catch-all}
access_log: "-"
"""


def gateway(sidecar: str = "127.0.0.1:50051"):
    return parse_gateway(GATEWAY.replace("SIDECAR", sidecar))


def http_manager(bootstrap):
    listener = bootstrap["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def routes(bootstrap):
    return {r["name"]: r for r in http_manager(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]}


def test_ext_proc_filter_is_derived_from_the_chains():
    b = render_bootstrap(gateway())
    ext_proc = http_manager(b)["http_filters"][0]["typed_config"]
    assert ext_proc["failure_mode_allow"] is True
    assert ext_proc["message_timeout"] == "0.25s"
    assert ext_proc["allow_mode_override"] is True
    # union of default (request+response headers) and api (request headers only)
    assert ext_proc["processing_mode"]["request_header_mode"] == "SEND"
    assert ext_proc["processing_mode"]["response_header_mode"] == "SEND"
    assert ext_proc["processing_mode"]["request_body_mode"] == "NONE"
    assert ext_proc["metadata_options"]["receiving_namespaces"]["untyped"] == [
        "envoykit.add-headers",
        "envoykit.deny-paths",
    ]
    assert http_manager(b)["http_filters"][-1]["name"] == "envoy.filters.http.router"


def test_each_route_names_its_chain_and_mode():
    r = routes(render_bootstrap(gateway()))
    api = r["route0"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]
    assert api["grpc_initial_metadata"] == [{"key": "x-envoykit-chain", "value": "api"}]
    assert api["processing_mode"]["response_header_mode"] == "SKIP"  # deny-paths has no response hook
    assert r["route0"]["metadata"]["filter_metadata"]["envoykit"]["chain"] == "api"
    for disabled in ("route1", "route2"):  # no chain, and a chain that needs nothing
        assert r[disabled]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    catch_all = r["catch-all"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]
    assert catch_all["grpc_initial_metadata"][0]["value"] == "default"


def test_clusters_for_upstreams_and_sidecar():
    clusters = {c["name"]: c for c in render_bootstrap(gateway())["static_resources"]["clusters"]}
    assert clusters["upstream_app"]["type"] == "STATIC"
    assert clusters["upstream_grpc"]["type"] == "STRICT_DNS"
    opts = clusters["upstream_grpc"]["typed_extension_protocol_options"]
    assert (
        "http2_protocol_options"
        in opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    )
    sidecar = clusters["envoykit_sidecar"]
    assert "http2_protocol_options" in str(sidecar["typed_extension_protocol_options"])


def test_unix_socket_sidecar_uses_a_pipe_address():
    assert sidecar_address("unix:/tmp/x.sock") == {"pipe": {"path": "/tmp/x.sock"}}
    assert sidecar_address("[::1]:5") == {"socket_address": {"address": "::1", "port_value": 5}}


def test_no_chains_means_no_ext_proc_filter_and_no_sidecar_cluster():
    g = parse_gateway("upstreams: {app: {url: 'http://127.0.0.1:1'}}\nroutes: [{prefix: /, upstream: app}]\n")
    b = render_bootstrap(g)
    assert [f["name"] for f in http_manager(b)["http_filters"]] == ["envoy.filters.http.router"]
    assert [c["name"] for c in b["static_resources"]["clusters"]] == ["upstream_app"]
    validate_bootstrap(b)


def test_access_log_prints_every_namespace():
    b = render_bootstrap(gateway())
    fields = http_manager(b)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fields["envoykit.add-headers"] == "%DYNAMIC_METADATA(envoykit.add-headers)%"


@pytest.mark.envoy
@pytest.mark.parametrize("sidecar", ["127.0.0.1:50051", "unix:/tmp/envoykit-test.sock"])
def test_rendered_config_passes_envoy_validate(sidecar):
    validate_bootstrap(render_bootstrap(gateway(sidecar)))


@pytest.mark.envoy
def test_cli_envoy_config_output_is_valid(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(GATEWAY.replace("SIDECAR", "127.0.0.1:50051"))
    result = CliRunner().invoke(app, ["envoy-config", str(path), "--port", "18080"])
    assert result.exit_code == 0, result.output
    rendered = yaml.safe_load(result.stdout)
    listener = rendered["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 18080
    validate_bootstrap(rendered)


@pytest.mark.envoy
def test_demo_gateway_renders_a_valid_config():
    from pathlib import Path

    import envoykit
    from envoykit.gateway import load_gateway

    demo = load_gateway(Path(envoykit.__file__).parent / "demo" / "gateway.yaml")
    validate_bootstrap(render_bootstrap(demo))


IN_PROXY = """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
in_proxy: {chain: edge, module: /tmp/edge.wasm}
chains:
  edge:
    - filter: deny-paths
      config: {prefixes: [/admin]}
      failure_mode: open
  api:
    - filter: add-headers
      config: {request: {x-a: "1"}}
routes:
  - {prefix: /api, upstream: app, chain: api}
  - {prefix: /, upstream: app, chain: null}
"""


def test_in_proxy_chain_renders_a_wasm_filter_before_ext_proc():
    filters = http_manager(render_bootstrap(parse_gateway(IN_PROXY)))["http_filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.http.wasm",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    plugin = filters[0]["typed_config"]["config"]
    assert plugin["vm_config"]["code"]["local"]["filename"] == "/tmp/edge.wasm"
    assert plugin["allow_on_headers_stop_iteration"] is True
    configured = yaml.safe_load(plugin["configuration"]["value"])
    assert configured == {
        "chain": "edge",
        "filters": [
            {
                "filter": "deny-paths",
                "name": "deny-paths",
                "config": {"prefixes": ["/admin"], "status": 403, "body": "forbidden\n"},
                "failure_mode": "open",
                "metadata_namespace": "envoykit.deny-paths",
            }
        ],
    }


def test_in_proxy_chain_must_exist():
    from envoykit import ConfigError

    text = IN_PROXY.replace("{chain: edge, module:", "{chain: edgy, module:")
    with pytest.raises(ConfigError, match=r"in_proxy\.chain: .edgy. is not one of chains"):
        parse_gateway(text, source="gw.yaml")


def test_in_proxy_chain_cannot_also_run_in_the_sidecar():
    from envoykit import ConfigError

    text = IN_PROXY.replace(
        "{prefix: /, upstream: app, chain: null}", "{prefix: /, upstream: app, chain: edge}"
    )
    with pytest.raises(
        ConfigError, match="chain 'edge' runs in-proxy; routes must not also send it to the sidecar"
    ):
        parse_gateway(text, source="gw.yaml")
