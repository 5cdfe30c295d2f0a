"""``jwt`` and ``opa`` through a real Envoy and the ext_proc sidecar: allow and deny for each,
their composition, an OPA form post, and a broken policy file that does not take the service down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from envoykit import Chain
from envoykit_filters import Jwt, Opa
from tests.jwtkit.tokens import ISSUER, Keys

pytestmark = [pytest.mark.envoy]

POLICY = """package envoy.authz
import rego.v1

default allow := false
allow if input.parsed_body.action == ["approve"]
allow if input.attributes.metadata_context.filter_metadata["envoykit.jwt"].payload.scope == "read write"
"""


def test_jwt_allows_and_denies_through_envoy(gateway_factory: Any) -> None:
    keys = Keys()
    provider = {
        "issuer": ISSUER,
        "local_jwks": {"inline_string": keys.jwks()},
        "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
    }
    rules = [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]
    gw = gateway_factory(Jwt({"providers": {"p": provider}, "rules": rules}))
    ok = gw.get("/api", headers={"authorization": f"Bearer {keys.token()}"})
    assert ok.status_code == 200
    assert gw.upstream.last.header("x-sub") == "alice"
    assert gw.upstream.last.header("authorization") is None
    denied = gw.get("/api", headers={"authorization": f"Bearer {keys.tampered()}"})
    assert (denied.status_code, denied.text) == (401, "Jwt verification fails")
    assert denied.headers["www-authenticate"].endswith('/api", error="invalid_token"')
    assert gw.get("/api").text == "Jwt is missing"


def test_opa_form_post_allow_deny_and_broken_policy(gateway_factory: Any, tmp_path: Path) -> None:
    (tmp_path / "authz.rego").write_text(POLICY)
    gw = gateway_factory(Opa({"policy_dir": str(tmp_path), "with_body": True, "reload_interval": 0}))
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert gw.request("POST", "/submit", headers=form, content=b"action=approve").status_code == 200
    assert gw.upstream.last.body == b"action=approve"
    assert gw.request("POST", "/submit", headers=form, content=b"action=reject").status_code == 403
    assert gw.get("/plain").status_code == 403

    (tmp_path / "authz.rego").write_text("package envoy.authz\nallow if {\n")  # broken: keep the old one
    os.utime(tmp_path / "authz.rego", ns=(1, 10**18))
    assert gw.request("POST", "/submit", headers=form, content=b"action=approve").status_code == 200
    assert gw.request("POST", "/submit", headers=form, content=b"action=reject").status_code == 403


def test_jwt_then_opa_on_the_verified_claims(gateway_factory: Any, tmp_path: Path) -> None:
    keys = Keys()
    (tmp_path / "authz.rego").write_text(POLICY)
    jwt = Jwt({"providers": {"p": {"issuer": ISSUER, "local_jwks": {"inline_string": keys.jwks()}}},
               "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]})  # fmt: skip
    gw = gateway_factory(Chain([jwt, Opa({"policy_dir": str(tmp_path)})], name="default"))
    assert gw.get("/x", headers={"authorization": f"Bearer {keys.token()}"}).status_code == 200
    assert gw.get("/x", headers={"authorization": f"Bearer {keys.token(scope='read')}"}).status_code == 403
    assert gw.get("/x").status_code == 401
