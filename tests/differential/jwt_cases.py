"""One JWT provider written for Envoy's native ``jwt_authn`` and for envoykit's ``jwt`` filter,
and the request matrix both must answer identically."""

from __future__ import annotations

import time
from typing import Any

from tests.jwtkit.tokens import AUDIENCE, ISSUER, Keys

from ._native import ROUTER, bootstrap_around


def provider(keys: Keys) -> dict[str, Any]:
    """A jwt_authn JwtProvider, exactly as a team would have it in its Envoy config."""
    return {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": keys.jwks()},
        "forward": True,
        "payload_in_metadata": "payload",
    }


RULES: list[dict[str, Any]] = [
    {"match": {"prefix": "/public"}},
    {"match": {"prefix": "/optional"}, "requires": {"requires_any": {"requirements": [
        {"provider_name": "main"}, {"allow_missing": {}}]}}},
    {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}},
]  # fmt: skip


def native_bootstrap(keys: Keys, upstream_port: int) -> dict[str, Any]:
    jwt_authn = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"main": provider(keys)},
        "rules": RULES,
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "native",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "echo"}}],
                }
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.jwt_authn", "typed_config": jwt_authn},
            ROUTER,
        ],
    }
    return bootstrap_around(manager, upstream_port)


def matrix(keys: Keys) -> list[tuple[str, str, dict[str, str]]]:
    """(label, path, headers) for every case of the differential matrix."""
    now = int(time.time())
    bearer = {
        "valid": keys.token(),
        "valid-ec": keys.sign(keys.claims(), key="ec"),
        "expired": keys.token(exp=now - 3600, iat=now - 7200),
        "not-yet-valid": keys.token(nbf=now + 3600),
        "wrong-issuer": keys.token(iss="https://evil.example.com"),
        "wrong-audience": keys.token(aud="other.example.com"),
        "no-audience": keys.token(aud=None),
        "no-exp": keys.token(exp=None),
        "unknown-kid": keys.sign(keys.claims(), key="other"),
        "no-kid": keys.sign(keys.claims(), kid=None),
        "alg-none": keys.alg_none(),
        "hs256-public-key": keys.hs256_with_public_key(),
        "tampered": keys.tampered(),
        "malformed": "not-a-jwt",
        "malformed-4-parts": keys.token() + ".x",
        "bad-base64": "eyJhbGciOiJSUzI1NiJ9.%%%.abc",
    }
    cases: list[tuple[str, str, dict[str, str]]] = []
    for label, token in bearer.items():
        cases.append((label, "/api", {"authorization": f"Bearer {token}"}))
    cases += [
        ("missing", "/api", {}),
        ("not-bearer", "/api", {"authorization": f"Basic {keys.token()}"}),
        ("query-param", f"/api?access_token={keys.token()}", {}),
        ("query-param-expired", f"/api?access_token={keys.token(exp=now - 3600, iat=now - 7200)}", {}),
        ("public-missing", "/public/x", {}),
        ("public-bad", "/public/x", {"authorization": "Bearer not-a-jwt"}),
        ("optional-missing", "/optional", {}),
        ("optional-valid", "/optional", {"authorization": f"Bearer {keys.token()}"}),
        ("optional-bad", "/optional", {"authorization": f"Bearer {keys.tampered()}"}),
    ]
    return cases
