"""Shared pieces for the testing-kit tests: a minimal Envoy bootstrap in front of an upstream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

Bootstrap = dict[str, Any]


def minimal_bootstrap(
    upstream_port: int, *, trailers: bool = False, access_log: Path | None = None, listener: str = "main"
) -> Bootstrap:
    """One listener on 127.0.0.1:0: ``/direct`` answers itself, everything else goes to the
    upstream (a STATIC cluster). ``trailers`` enables HTTP/1.1 trailers on both codecs: Envoy
    needs it on the HCM *and* on the cluster, else it drops trailers in both directions."""
    hcm: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/direct"},
                            "direct_response": {"status": 200, "body": {"inline_string": "direct\n"}},
                        },
                        {"match": {"prefix": "/"}, "route": {"cluster": "echo", "timeout": "30s"}},
                    ],
                }
            ]
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    cluster: dict[str, Any] = {
        "name": "echo",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "echo",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if trailers:
        hcm["http_protocol_options"] = {"enable_trailers": True}
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}},
            }
        }
    if access_log is not None:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {"@type": FILE_LOG, "path": str(access_log)},
            }
        ]
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": listener,
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster],
        }
    }


@pytest.fixture
def bootstrap() -> Callable[..., Bootstrap]:
    """The ``minimal_bootstrap`` builder."""
    return minimal_bootstrap
