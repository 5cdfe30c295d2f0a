"""The ``opa`` filter in-process: OPA-Envoy's input and result shapes, dry-run, hot reload."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from envoykit import ConfigError
from envoykit.testing import Harness
from envoykit_filters import Opa

POLICY = """package envoy.authz
import rego.v1

default allow := false

allow if {
    input.attributes.request.http.method == "GET"
    input.parsed_path == ["public", "info"]
}

allow := {"allowed": true, "headers": {"x-opa-user": input.parsed_query.user[0]},
          "response_headers_to_add": {"x-opa": "yes"}, "request_headers_to_remove": ["x-secret"],
          "dynamic_metadata": {"user": input.parsed_query.user[0]}} if {
    input.parsed_path[0] == "hello"
}

allow := {"allowed": false, "http_status": 418, "body": "teapot says no", "headers": {"x-why": "teapot"}} if {
    input.parsed_path[0] == "teapot"
}

allow if input.parsed_body.action == ["approve"]
allow if input.parsed_body.amount < 100
allow if input.attributes.metadata_context.filter_metadata["envoykit.jwt"].principal == "https://issuer.example.com/alice"
"""


def write_policy(directory: Path, text: str, name: str = "authz.rego") -> Path:
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write_policy(tmp_path, POLICY)
    return tmp_path


@pytest.mark.asyncio
async def test_boolean_result_allows_and_denies(policy_dir: Path) -> None:
    h = Harness(Opa, {"policy_dir": str(policy_dir)})
    assert (await h.arequest("GET", "/public/info")).status == 200
    denied = await h.arequest("POST", "/public/info")
    assert denied.local_reply and denied.status == 403 and denied.upstream_request is None
    assert h.metric("envoykit.opa.denied") == 1 and h.metric("envoykit.opa.allowed") == 1


@pytest.mark.asyncio
async def test_object_result_headers_removal_metadata_and_response_headers(policy_dir: Path) -> None:
    h = Harness(Opa, {"policy_dir": str(policy_dir)})
    r = await h.arequest("GET", "/hello?user=bob", headers={"x-secret": "s"})
    assert r.status == 200
    assert r.upstream_request is not None
    assert r.upstream_request.headers.get("x-opa-user") == "bob"
    assert "x-secret" not in r.upstream_request.headers
    assert r.response.headers.get("x-opa") == "yes"
    assert r.metadata["envoykit.opa"] == {"user": "bob", "allowed": True}


@pytest.mark.asyncio
async def test_object_denial_uses_status_body_and_headers(policy_dir: Path) -> None:
    r = await Harness(Opa, {"policy_dir": str(policy_dir)}).arequest("GET", "/teapot")
    assert (r.status, r.response.body, r.response.headers.get("x-why")) == (418, b"teapot says no", "teapot")


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-www-form-urlencoded", b"action=approve&x=1", 200),
        ("application/x-www-form-urlencoded", b"action=reject", 403),
        ("application/json", b'{"amount": 5}', 200),
        ("application/json; charset=utf-8", b'{"amount": 500}', 403),
        ("application/json", b"{not json", 403),
        ("text/plain", b"amount=5", 403),
    ],
)
@pytest.mark.asyncio
async def test_parsed_body_json_and_form(
    policy_dir: Path, content_type: str, body: bytes, status: int
) -> None:
    h = Harness(Opa, {"policy_dir": str(policy_dir), "with_body": True})
    r = await h.arequest("POST", "/submit", headers={"content-type": content_type}, body=body)
    assert r.status == status


@pytest.mark.asyncio
async def test_body_is_not_requested_unless_configured(policy_dir: Path) -> None:
    from envoykit import BodyMode

    assert Opa({"policy_dir": str(policy_dir)}).needs().request_body is BodyMode.NONE
    assert Opa({"policy_dir": str(policy_dir), "with_body": True}).needs().request_body is BodyMode.BUFFERED
    # With the body configured, a request without one is still decided (on its headers).
    h = Harness(Opa, {"policy_dir": str(policy_dir), "with_body": True})
    assert (await h.arequest("GET", "/public/info")).status == 200


@pytest.mark.asyncio
async def test_input_document_shape(policy_dir: Path) -> None:
    write_policy(
        policy_dir,
        'package envoy.authz\nimport rego.v1\nallow := {"allowed": false, "body": json.marshal(input)}\n',
    )
    h = Harness(Opa, {"policy_dir": str(policy_dir), "with_body": True})
    r = await h.arequest(
        "POST", "/a/b%20c?x=1&x=2&y=", headers={"content-type": "application/json", "x-h": "v"},
        body=b'{"k": [1]}', authority="api.example.com",
    )  # fmt: skip
    doc = json.loads(r.response.body)
    http = doc["attributes"]["request"]["http"]
    assert (http["method"], http["path"], http["host"]) == ("POST", "/a/b%20c?x=1&x=2&y=", "api.example.com")
    assert http["headers"]["x-h"] == "v" and http["body"] == '{"k": [1]}'
    assert doc["parsed_path"] == ["a", "b c"]
    assert doc["parsed_query"] == {"x": ["1", "2"], "y": [""]}
    assert doc["parsed_body"] == {"k": [1]}


@pytest.mark.asyncio
async def test_composes_with_the_jwt_filter(policy_dir: Path) -> None:
    from envoykit import Chain
    from envoykit_filters import Jwt
    from tests.jwtkit.tokens import Keys

    keys = Keys()
    jwt = Jwt({"providers": {"p": {"local_jwks": {"inline_string": keys.jwks()}}},
               "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing": {}}}]})  # fmt: skip
    h = Harness(Chain([jwt, Opa({"policy_dir": str(policy_dir)})]))
    assert (await h.arequest("GET", "/x", headers={"authorization": f"Bearer {keys.token()}"})).status == 200
    assert (
        await h.arequest("GET", "/x", headers={"authorization": f"Bearer {keys.token(sub='eve')}"})
    ).status == 403
    assert (await h.arequest("GET", "/x")).status == 403


@pytest.mark.asyncio
async def test_dry_run_allows_and_logs(policy_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(Opa, {"policy_dir": str(policy_dir), "dry_run": True})
    with caplog.at_level(logging.INFO, logger="envoykit.filters.opa"):
        r = await h.arequest("DELETE", "/x")
    assert r.status == 200 and r.upstream_request is not None
    logged = [json.loads(rec.getMessage()) for rec in caplog.records if rec.getMessage().startswith("{")]
    assert logged[-1]["opa"] | {"request_id": None} == {
        "query": "data.envoy.authz.allow", "allowed": False, "dry_run": True, "method": "DELETE",
        "path": "/x", "request_id": None,
    }  # fmt: skip
    assert h.metric("envoykit.opa.dry_run_denied") == 1


@pytest.mark.asyncio
async def test_custom_query_and_undefined_result_denies(policy_dir: Path) -> None:
    write_policy(
        policy_dir, 'package other\nimport rego.v1\nok if input.parsed_path[0] == "yes"\n', "other.rego"
    )
    h = Harness(Opa, {"policy_dir": str(policy_dir), "query": "data.other.ok"})
    assert (await h.arequest("GET", "/yes")).status == 200
    assert (await h.arequest("GET", "/no")).status == 403  # undefined -> deny


@pytest.mark.asyncio
async def test_policies_reload_on_change_and_a_broken_one_keeps_the_previous(
    policy_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = Opa({"policy_dir": str(policy_dir), "reload_interval": 0})
    h = Harness(f)
    assert (await h.arequest("GET", "/reload")).status == 403
    path = write_policy(policy_dir, POLICY + '\nallow if input.parsed_path[0] == "reload"\n')
    os.utime(path, ns=(1, 10**18))  # a new mtime even on coarse file systems
    assert (await h.arequest("GET", "/reload")).status == 200
    assert f.policies.loads == 2

    with caplog.at_level(logging.ERROR, logger="envoykit.filters.opa"):
        write_policy(policy_dir, "package envoy.authz\nallow if {\n")
        os.utime(path, ns=(1, 2 * 10**18))
        assert (await h.arequest("GET", "/reload")).status == 200  # the previous policy still answers
    assert "policy reload failed" in caplog.text and "authz.rego" in caplog.text
    assert f.policies.loads == 2 and f.policies.last_error


def test_bad_config_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="policy_dir"):
        Opa({"policy_dir": str(tmp_path / "nope")})
    write_policy(tmp_path, "package envoy.authz\nallow if {\n")
    with pytest.raises(ConfigError, match=r"authz\.rego"):
        Opa({"policy_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="query"):
        Opa({"policy_dir": str(tmp_path), "query": "allow; drop"})


def test_a_broken_reload_on_a_worker_thread_leaves_nothing_to_drop_at_exit(tmp_path: Path) -> None:
    """regorus engines may only be dropped on the thread that made them; PyO3 prints
    "unsendable, but is being dropped on another thread" otherwise. A reload that fails on a
    worker thread (as in the sidecar) must not leave its engine for the main thread to free."""
    import subprocess
    import sys

    (tmp_path / "policy.rego").write_text(POLICY)
    script = f"""
import threading
from pathlib import Path
from envoykit_filters._opa.policies import PolicyStore

def work():
    store = PolicyStore(Path({str(tmp_path)!r}), check_interval=0)
    (Path({str(tmp_path)!r}) / "broken.rego").write_text("package envoy.authz\\nallow if {{")
    store.engine()
    assert store.last_error, "the broken policy was not noticed"
    print("kept", store.loads)

t = threading.Thread(target=work)
t.start()
t.join()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kept 1"
    assert "unsendable" not in done.stderr
