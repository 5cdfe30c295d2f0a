"""``envoykit envoy-config`` for a gateway file with the transcoder: buffered bodies on the
transcoded routes, an HTTP/2 cluster for the gRPC backend, ``:method`` unlocked for ext_proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit import ConfigError
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import parse_gateway
from envoykit.testing import validate_bootstrap

GATEWAY = """
sidecar: {address: "127.0.0.1:50051"}
upstreams:
  bookstore: {url: "http://127.0.0.1:9000", http2: true}
  web: {url: "http://127.0.0.1:8080"}
chains:
  grpc:
    - filter: grpc-json-transcoder
      config:
        proto_descriptor: DESCRIPTOR
        services: [bookstore.Bookstore]
        print_options: {preserve_proto_field_names: true}
  web:
    - filter: add-headers
      config: {request: {x-a: "1"}}
routes:
  - {prefix: /v1/, upstream: bookstore, chain: grpc}
  - {prefix: /, upstream: web, chain: web}
"""


def _render(descriptor: Path) -> dict:
    return render_bootstrap(parse_gateway(GATEWAY.replace("DESCRIPTOR", str(descriptor))))


def test_transcoded_routes_buffer_bodies_and_the_backend_is_http2(descriptor_set: Path) -> None:
    bootstrap = _render(descriptor_set)
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext_proc["typed_config"]["mutation_rules"] == {"allow_envoy": True, "allow_all_routing": True}
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    mode = routes[0]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]["processing_mode"]
    assert mode["request_body_mode"] == mode["response_body_mode"] == "BUFFERED"
    assert mode["response_trailer_mode"] == "SEND"
    web = routes[1]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["overrides"]["processing_mode"]
    assert web["request_body_mode"] == "NONE"
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    options = clusters["upstream_bookstore"]["typed_extension_protocol_options"]
    protocol = next(iter(options.values()))["explicit_http_config"]
    assert "http2_protocol_options" in protocol


@pytest.mark.envoy
def test_rendered_config_passes_envoy_validate(descriptor_set: Path) -> None:
    validate_bootstrap(_render(descriptor_set))


def test_without_the_transcoder_routing_headers_stay_locked(descriptor_set: Path) -> None:
    text = GATEWAY.replace("DESCRIPTOR", str(descriptor_set)).replace("chain: grpc}", "chain: web}")
    bootstrap = render_bootstrap(parse_gateway(text))
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext_proc["typed_config"]["mutation_rules"] == {"allow_envoy": True}


def test_a_bad_descriptor_in_a_gateway_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chains\.grpc\[0\]\.config: proto_descriptor: cannot read"):
        parse_gateway(GATEWAY.replace("DESCRIPTOR", str(tmp_path / "missing.pb")))
