"""The ``jwt`` filter in-process: every provider option, requirement rules, remote JWKS caching."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from envoykit import ConfigError
from envoykit.testing import Harness
from envoykit_filters import Jwt
from tests.jwtkit.tokens import AUDIENCE, ISSUER, Keys


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def local(keys: Keys, **provider: Any) -> dict[str, Any]:
    return {
        "providers": {"p": {"issuer": ISSUER, "audiences": [AUDIENCE],
                            "local_jwks": {"inline_string": keys.jwks()}, **provider}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}],
    }  # fmt: skip


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.asyncio
async def test_valid_token_sets_metadata_and_strips_the_token(keys: Keys) -> None:
    r = await Harness(Jwt, local(keys, payload_in_metadata="claims")).arequest(
        "GET", "/", headers=bearer(keys.token())
    )
    assert r.status == 200 and r.upstream_request is not None
    assert "authorization" not in r.upstream_request.headers  # forward: false (Envoy's default)
    md = r.metadata["envoykit.jwt"]
    assert md["principal"] == f"{ISSUER}/alice" and md["payload"]["sub"] == "alice"
    assert md["claims"] == md["payload"]


@pytest.mark.asyncio
async def test_forward_keeps_the_token_and_payload_header_and_claims(keys: Keys) -> None:
    cfg = local(keys, forward=True, forward_payload_header="x-jwt-payload", pad_forward_payload_header=True,
                claim_to_headers=[{"header_name": "x-sub", "claim_name": "sub"},
                                  {"header_name": "x-role", "claim_name": "realm.roles"}])  # fmt: skip
    token = keys.sign(keys.claims(realm={"roles": ["a", "b"]}))
    r = await Harness(Jwt, cfg).arequest("GET", "/", headers={**bearer(token), "x-sub": "spoofed"})
    up = r.upstream_request
    assert up is not None and up.headers.get("authorization") == f"Bearer {token}"
    payload = json.loads(base64.urlsafe_b64decode(up.headers.get("x-jwt-payload") or ""))
    assert payload["sub"] == "alice"
    assert (up.headers.get("x-sub"), up.headers.get("x-role")) == ("alice", "a,b")
    # A client cannot send those headers itself, even where no token is needed.
    open_cfg = {**cfg, "rules": []}
    r = await Harness(Jwt, open_cfg).arequest(
        "GET", "/", headers={"x-sub": "spoofed", "x-jwt-payload": "e30"}
    )
    assert r.upstream_request is not None and "x-sub" not in r.upstream_request.headers
    assert "x-jwt-payload" not in r.upstream_request.headers


@pytest.mark.parametrize(
    ("case", "status", "body"),
    [
        ("expired", 401, "Jwt is expired"),
        ("not-yet-valid", 401, "Jwt not yet valid"),
        ("wrong-issuer", 401, "Jwt issuer is not configured"),
        ("wrong-audience", 403, "Audiences in Jwt are not allowed"),
        ("alg-none", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ("hs256", 401, "Jwt verification fails"),
        ("tampered", 401, "Jwt verification fails"),
        ("unknown-kid", 401, "Jwks doesn't have key to match kid or alg from Jwt"),
    ],
)
@pytest.mark.asyncio
async def test_bad_tokens(keys: Keys, case: str, status: int, body: str) -> None:
    token = {
        "expired": lambda: keys.token(exp=1000, iat=900),
        "not-yet-valid": lambda: keys.token(nbf=4_000_000_000),
        "wrong-issuer": lambda: keys.token(iss="https://evil"),
        "wrong-audience": lambda: keys.token(aud="other"),
        "alg-none": keys.alg_none,
        "hs256": keys.hs256_with_public_key,
        "tampered": keys.tampered,
        "unknown-kid": lambda: keys.sign(keys.claims(), key="other"),
    }[case]()
    r = await Harness(Jwt, local(keys)).arequest(
        "GET", "/p?q=1", headers=bearer(token), authority="h.example"
    )
    assert (r.status, r.response.body.decode()) == (status, body)
    assert (
        r.response.headers.get("www-authenticate")
        == 'Bearer realm="http://h.example/p?q=1", error="invalid_token"'
    )


@pytest.mark.asyncio
async def test_hs256_only_with_a_listed_algorithm_and_an_oct_key(keys: Keys) -> None:
    from jwcrypto import jwk

    secret = jwk.JWK.generate(kty="oct", size=256, kid="hs")
    jwks = json.dumps({"keys": [json.loads(secret.export())]})
    token = Keys(rsa=secret).sign(keys.claims(), key="rsa", alg="HS256")
    base = {"issuer": ISSUER, "local_jwks": {"inline_string": jwks}}
    rules = [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]
    default = await Harness(Jwt, {"providers": {"p": base}, "rules": rules}).arequest(
        "GET", "/", headers=bearer(token)
    )
    assert default.status == 401  # HS256 is not accepted unless listed
    listed = {"providers": {"p": {**base, "algorithms": ["HS256"]}}, "rules": rules}
    assert (await Harness(Jwt, listed).arequest("GET", "/", headers=bearer(token))).status == 200


@pytest.mark.asyncio
async def test_clock_skew(keys: Keys) -> None:
    token = keys.token(exp=10_000)
    at = 10_000 + 30
    assert (
        await Harness(Jwt(local(keys), clock=lambda: at)).arequest("GET", "/", headers=bearer(token))
    ).status == 200
    strict = Jwt(local(keys, clock_skew_seconds=0), clock=lambda: at)
    assert (await Harness(strict).arequest("GET", "/", headers=bearer(token))).status == 401


@pytest.mark.asyncio
async def test_token_locations(keys: Keys) -> None:
    cfg = local(keys, from_headers=[{"name": "x-token", "value_prefix": "Tok "}], from_params=["jwt"],
                from_cookies=["session"])  # fmt: skip
    h = Harness(Jwt, cfg)
    t = keys.token()
    assert (await h.arequest("GET", "/", headers={"x-token": f"Tok {t}"})).status == 200
    assert (await h.arequest("GET", f"/?jwt={t}")).status == 200
    assert (await h.arequest("GET", "/", headers={"cookie": f"a=b; session={t}"})).status == 200
    # Listing locations replaces the defaults (Authorization: Bearer, access_token), as in Envoy.
    missing = await h.arequest("GET", f"/?access_token={t}", headers=bearer(t))
    assert (missing.status, missing.response.body) == (401, b"Jwt is missing")
    realm = f'Bearer realm="http://example.com{f"/?access_token={t}"[:256]}"'  # path cut at 256, as Envoy
    assert missing.response.headers.get("www-authenticate") == realm


@pytest.mark.asyncio
async def test_rules_and_requirements(keys: Keys) -> None:
    other = Keys()
    providers = {
        "a": {"issuer": ISSUER, "local_jwks": {"inline_string": keys.jwks()}},
        "b": {"issuer": "https://b", "local_jwks": {"inline_string": other.jwks()},
              "from_headers": [{"name": "x-b"}]},
    }  # fmt: skip
    rules = [
        {"match": {"path": "/open"}},
        {"match": {"prefix": "/any"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "a"}, {"provider_name": "b"}]}}},
        {"match": {"prefix": "/all"}, "requires": {"requires_all": {"requirements": [
            {"provider_name": "a"}, {"provider_name": "b"}]}}},
        {"match": {"prefix": "/aud"}, "requires": {"provider_and_audiences": {
            "provider_name": "a", "audiences": ["special"]}}},
        {"match": {"prefix": "/opt"}, "requires": {"allow_missing_or_failed": {}}},
        {"match": {"safe_regex": {"regex": "/write/.*"}, "methods": ["POST"]},
         "requires": {"provider_name": "a"}},
    ]  # fmt: skip
    h = Harness(Jwt, {"providers": providers, "rules": rules})
    a, b = bearer(keys.token()), {"x-b": other.token(iss="https://b")}

    async def status(path: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
        return (await h.arequest(method, path, headers=headers or {})).status

    assert await status("/open") == 200 and await status("/unmatched") == 200
    assert await status("/any", a) == 200 and await status("/any", b) == 200 and await status("/any") == 401
    assert await status("/all", a) == 401 and await status("/all", {**a, **b}) == 200
    assert await status("/aud", a) == 403 and await status("/aud", bearer(keys.token(aud="special"))) == 200
    assert await status("/opt") == 200 and await status("/opt", bearer(keys.tampered())) == 200
    assert await status("/write/x", method="POST") == 401 and await status("/write/x") == 200


def test_bad_config_fails_at_load_with_the_field(keys: Keys) -> None:
    good = local(keys)
    bad = [
        ({"providers": {}}, "providers"),
        ({**good, "providers": {"p": {"issuer": "x"}}}, "remote_jwks or local_jwks"),
        ({**good, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "nope"}}]}, "nope"),
        ({**good, "rules": [{"match": {"prefix": "/"}, "requires": {}}]}, "exactly one"),
        ({**good, "providers": {"p": {**good["providers"]["p"], "algorithms": ["none"]}}}, "algorithms"),
        ({**good, "providers": {"p": {"remote_jwks": {"http_uri": {"uri": "http://x"},
                                                      "cache_duration": "5 min"}}}}, "cache_duration"),
        ({**good, "providers": {"p": {"local_jwks": {"inline_string": "{}"}}}}, "JWKS"),
    ]  # fmt: skip
    for cfg, needle in bad:
        with pytest.raises((ConfigError, ValueError), match=needle):
            Jwt(cfg)


# -- remote JWKS ---------------------------------------------------------------------------------
class JwksServer:
    """A JWKS endpoint on 127.0.0.1 (OS port) whose keys and availability the test controls."""

    def __init__(self, body: str) -> None:
        self.body, self.up, self.hits = body, True, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                code, data = (200, server.body.encode()) if server.up else (503, b"down")
                self.send_response(code)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer(keys.jwks("rsa"))
    yield server
    server.close()


def remote(url: str) -> dict[str, Any]:
    return {
        "providers": {"p": {"issuer": ISSUER, "remote_jwks": {
            "http_uri": {"uri": url, "cluster": "jwks", "timeout": "2s"},
            "cache_duration": "300s", "min_refetch_interval": "30s",
            "async_fetch": {"fast_listener": False}}}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}],
    }  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_remote_jwks_cached_refreshed_and_survives_an_outage(
    keys: Keys, jwks_server: JwksServer
) -> None:
    f = Jwt(remote(jwks_server.url))
    source = f.providers["p"].jwks
    clock = Clock()
    source.clock = clock  # type: ignore[attr-defined]
    h = Harness(f)
    for _ in range(3):
        assert (await h.arequest("GET", "/", headers=bearer(keys.token()))).status == 200
    assert jwks_server.hits == 1  # cached

    jwks_server.up = False
    clock.now += 301  # stale: a background refresh starts, the cached keys answer meanwhile
    assert (await h.arequest("GET", "/", headers=bearer(keys.token()))).status == 200
    assert source.refreshing is not None  # type: ignore[attr-defined]
    assert await source.refreshing is False  # type: ignore[attr-defined]
    assert jwks_server.hits == 2
    assert (
        await h.arequest("GET", "/", headers=bearer(keys.token()))
    ).status == 200  # endpoint down: still fine


@pytest.mark.asyncio
async def test_unknown_kid_refetches_once_per_interval(keys: Keys, jwks_server: JwksServer) -> None:
    f = Jwt(remote(jwks_server.url))
    clock = Clock()
    f.providers["p"].jwks.clock = clock  # type: ignore[attr-defined]
    h = Harness(f)
    assert (await h.arequest("GET", "/", headers=bearer(keys.token()))).status == 200
    clock.now += 31
    rotated = keys.sign(keys.claims(), key="other")
    for _ in range(3):
        r = await h.arequest("GET", "/", headers=bearer(rotated))
        assert r.response.body == b"Jwks doesn't have key to match kid or alg from Jwt"
    assert jwks_server.hits == 2  # one refetch for three unknown-kid requests
    jwks_server.body = keys.jwks("rsa", "other")  # the issuer publishes its new key
    assert (await h.arequest("GET", "/", headers=bearer(rotated))).status == 401  # rate limited
    clock.now += 31
    assert (await h.arequest("GET", "/", headers=bearer(rotated))).status == 200
    assert jwks_server.hits == 3


@pytest.mark.asyncio
async def test_no_keys_at_all_is_401_with_the_reason(keys: Keys, jwks_server: JwksServer) -> None:
    jwks_server.up = False
    r = await Harness(Jwt, remote(jwks_server.url)).arequest("GET", "/x", headers=bearer(keys.token()))
    assert (r.status, r.response.body) == (401, b"Jwks remote fetch is failed")
    assert (
        r.response.headers.get("www-authenticate")
        == 'Bearer realm="http://example.com/x", error="invalid_token"'
    )


# -- verified-token cache ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_verified_token_is_not_verified_again_but_time_is_checked(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import envoykit_filters.jwt as jwt_module

    calls = []
    real = jwt_module.verify_signature
    monkeypatch.setattr(jwt_module, "verify_signature", lambda *a: calls.append(1) or real(*a))
    now = [float(keys.claims()["iat"])]
    h = Harness(Jwt(local(keys), clock=lambda: now[0]))
    token = keys.token(exp=int(now[0]) + 100)
    for _ in range(3):
        assert (await h.arequest("GET", "/", headers=bearer(token))).status == 200
    assert len(calls) == 1
    now[0] += 100 + 61  # past exp + clock skew: the cached token is expired like any other
    r = await h.arequest("GET", "/", headers=bearer(token))
    assert (r.status, r.response.body) == (401, b"Jwt is expired")
    tampered = keys.tampered()
    assert (await h.arequest("GET", "/", headers=bearer(tampered))).status == 401
    assert (await h.arequest("GET", "/", headers=bearer(tampered))).status == 401  # never cached


@pytest.mark.asyncio
async def test_a_cached_token_is_verified_again_with_refreshed_keys(
    keys: Keys, jwks_server: JwksServer
) -> None:
    f = Jwt(remote(jwks_server.url))
    source = f.providers["p"].jwks
    clock = Clock()
    source.clock = clock  # type: ignore[attr-defined]
    h = Harness(f)
    token = keys.token()
    assert (await h.arequest("GET", "/", headers=bearer(token))).status == 200
    jwks_server.body = keys.jwks("other")  # the issuer drops the key that signed the token
    clock.now += 301
    assert (await h.arequest("GET", "/", headers=bearer(token))).status == 200  # stale keys answer
    assert await source.refreshing is True  # type: ignore[attr-defined]
    r = await h.arequest("GET", "/", headers=bearer(token))
    assert r.status == 401 and r.response.body == b"Jwks doesn't have key to match kid or alg from Jwt"


@pytest.mark.asyncio
async def test_local_keys_only_runs_without_awaiting(keys: Keys, jwks_server: JwksServer) -> None:
    local_only = Jwt(local(keys))
    assert isinstance(local_only, Jwt) and local_only.name == "jwt"
    assert type(local_only).async_hooks() == []  # a `threads` sidecar runs it on its own thread
    assert Harness(local_only).request("GET", "/", headers=bearer(keys.token())).status == 200
    assert Harness(local_only).request("GET", "/").status == 401
    assert type(Jwt(remote(jwks_server.url))).async_hooks() == ["on_request_headers"]
