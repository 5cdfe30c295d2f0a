"""The Envoy bootstrap around a native filter under test: one listener, one echo upstream."""

from __future__ import annotations

from typing import Any

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def bootstrap_around(manager: dict[str, Any], upstream_port: int) -> dict[str, Any]:
    """Envoy (OS-assigned ports) serving ``manager`` (an HttpConnectionManager config) on its
    listener ``native``, with the echo upstream on ``upstream_port`` as cluster ``echo``."""
    local = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}
    return {
        "admin": {"address": local},
        "static_resources": {
            "listeners": [{"name": "native", "address": local, "filter_chains": [{"filters": [hcm]}]}],
            "clusters": [
                {
                    "name": "echo",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "echo",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        },
    }
