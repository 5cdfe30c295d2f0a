"""Envoy's native ``grpc_json_transcoder`` in front of the bookstore: the reference listener of
the differential test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NATIVE = "native"
NATIVE_CLUSTER = "native_bookstore"
_API = "type.googleapis.com/envoy.extensions.filters"


def grpc_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }  # fmt: skip


def native_listener(descriptor: Path, options: dict[str, Any]) -> dict[str, Any]:
    """A listener named ``native`` running the native transcoder with ``options`` (its proto
    field names: ``print_options``, ``convert_grpc_status``...)."""
    transcoder = {
        "@type": f"{_API}.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        "proto_descriptor": str(descriptor),
        "services": ["bookstore.Bookstore"],
        **options,
    }
    manager = {
        "@type": f"{_API}.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": NATIVE,
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": NATIVE_CLUSTER, "timeout": "30s"}}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }  # fmt: skip
    return {
        "name": NATIVE,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    }  # fmt: skip
