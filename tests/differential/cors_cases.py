"""One CORS policy written twice, for Envoy's native filter and for envoykit's ``cors``, and the
probes both must answer identically (shared by the differential and the portability tests)."""

from __future__ import annotations

from typing import Any

from envoykit.testing import EchoUpstream, raw_request

from ._native import ROUTER, bootstrap_around

APP = "https://app.example.com"

# -- the native side: envoy.extensions.filters.http.cors.v3.CorsPolicy --------------------------
_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
NATIVE_DEFAULT: dict[str, Any] = {
    "allow_origin_string_match": [
        {"exact": APP},
        # envoykit's "https://*.tenants.example.com", spelt as a regex for Envoy.
        {"safe_regex": {"regex": r"https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.tenants\.example\.com"}},
        {"safe_regex": {"regex": r"https://r[0-9]+\.example\.org"}},
    ],
    "allow_methods": "GET, PUT, DELETE",
    "allow_headers": "x-a, content-type",
    "expose_headers": "x-total, x-page",
    "max_age": "600",
    "allow_credentials": True,
    "allow_private_network_access": True,
}
#: Route policies; each unset field falls back to the virtual host's (NATIVE_DEFAULT).
NATIVE_ROUTES: list[tuple[str, dict[str, Any]]] = [
    (
        "/partners",
        {
            "allow_origin_string_match": [{"safe_regex": {"regex": r"https://[a-z]+\.partner\.io"}}],
            "allow_credentials": False,
            "expose_headers": "x-partner",
        },
    ),
    ("/star", {"allow_origin_string_match": [{"exact": "*"}], "allow_methods": "*", "allow_headers": "*"}),
    ("/nofwd", {"forward_not_matching_preflights": False, "max_age": "30"}),
]

# -- the envoykit side ---------------------------------------------------------------------------
ENVOYKIT: dict[str, Any] = {
    "allow_origins": [APP, "https://*.tenants.example.com"],
    "allow_origin_regexes": [r"https://r[0-9]+\.example\.org"],
    "allow_methods": ["GET", "PUT", "DELETE"],
    "allow_headers": ["x-a", "content-type"],
    "expose_headers": ["x-total", "x-page"],
    "max_age": 600,
    "allow_credentials": True,
    "allow_private_network": True,
    "routes": [
        {
            "match": {"prefix": "/partners"},
            "allow_origin_regexes": [r"https://[a-z]+\.partner\.io"],
            "allow_credentials": False,
            "expose_headers": ["x-partner"],
        },
        {
            "match": {"prefix": "/star"},
            "allow_origins": ["*"],
            "allow_methods": ["*"],
            "allow_headers": ["*"],
        },
        {"match": {"prefix": "/nofwd"}, "forward_not_matching_preflights": False, "max_age": 30},
    ],
}


def native_bootstrap(upstream_port: int) -> dict[str, Any]:
    """Envoy with the native cors filter, the policy on the virtual host and routes, routing
    (not direct_response: native CORS ignores those) to the echo upstream."""
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": prefix},
            "route": {"cluster": "echo"},
            "typed_per_filter_config": {"envoy.filters.http.cors": {"@type": _POLICY, **policy}},
        }
        for prefix, policy in NATIVE_ROUTES
    ]
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "echo"}})
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "native",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": routes,
                    "typed_per_filter_config": {
                        "envoy.filters.http.cors": {"@type": _POLICY, **NATIVE_DEFAULT}
                    },
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.cors",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
            },
            ROUTER,
        ],
    }
    return bootstrap_around(manager, upstream_port)


# -- the probes ----------------------------------------------------------------------------------
ORIGINS: dict[str, str | None] = {
    "exact": APP,
    "regex": "https://r42.example.org",
    "wildcard": "https://eu.acme.tenants.example.com",
    "partner": "https://acme.partner.io",
    "disallowed": "https://evil.example.net",
    "null": "null",
    "empty": "",
    "missing": None,
}
#: kind -> (method, extra request headers). The upstream adds its own CORS and vary headers to
#: see which ones Envoy replaces and which it lets through.
KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "preflight": (
        "OPTIONS",
        {"access-control-request-method": "PUT", "access-control-request-headers": "x-a, x-b"},
    ),
    "preflight-bare": ("OPTIONS", {"access-control-request-method": "PATCH"}),
    "preflight-pna": (
        "OPTIONS",
        {"access-control-request-method": "GET", "access-control-request-private-network": "true"},
    ),
    "options-no-acrm": ("OPTIONS", {}),
    "simple": (
        "GET",
        {"x-echo-header-access-control-allow-origin": "upstream", "x-echo-header-vary": "accept"},
    ),
    "credentialed-error": ("POST", {"cookie": "session=1", "x-echo-status": "500"}),
}
PATHS = ("/api", "/partners/a", "/star/b", "/nofwd/c")

Probe = tuple[str, str, str, dict[str, str]]


def probes() -> list[Probe]:
    out = []
    for path in PATHS:
        for origin_name, origin in ORIGINS.items():
            for kind, (method, extra) in KINDS.items():
                headers = dict(extra)
                if origin is not None:
                    headers["origin"] = origin
                out.append((f"{path} {origin_name} {kind}", method, path, headers))
    return out


def observe(url: str, upstream: EchoUpstream, cases: list[Probe]) -> dict[str, tuple[Any, ...]]:
    """Per probe: status, whether the upstream saw the request, the CORS response headers
    (``access-control-*`` and ``vary``) exactly as sent, and for an answer made at the gateway
    every other header and the body too (an upstream's answer echoes ports and ids that differ)."""
    seen = {}
    for label, method, path, headers in cases:
        upstream.clear()
        response = raw_request(url + path, method, headers=headers)
        reached = bool(upstream.received)
        cors = sorted((k, v) for k, v in response.headers if k.startswith("access-control-") or k == "vary")
        rest = None
        if not reached:
            rest = (
                sorted((k, v) for k, v in response.headers if k not in {"date", *dict(cors)}),
                response.body,
            )
        seen[label] = (response.status, reached, cors, rest)
    return seen


def counts(seen: dict[str, tuple[Any, ...]]) -> dict[str, int]:
    """How many probes were answered at the gateway, and how many got an origin echoed back
    (not counting the upstream's own ``access-control-allow-origin: upstream``)."""
    return {
        "local": sum(1 for _, reached, *_ in seen.values() if not reached),
        "echoed": sum(
            1
            for _, _, cors, _ in seen.values()
            if any(k == "access-control-allow-origin" and v != "upstream" for k, v in cors)
        ),
    }
