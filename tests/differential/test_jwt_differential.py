"""envoykit's ``jwt`` (in the sidecar) against Envoy 1.40's native ``envoy.filters.http.jwt_authn``:
two listeners in one Envoy, the same provider block (pasted as is) and the same JWKS, the same
request matrix -> identical status codes, bodies and ``WWW-Authenticate`` headers."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from envoykit import Chain
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.runtime import SidecarThread
from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit_filters import Jwt
from tests.jwtkit.tokens import Keys

from .jwt_cases import RULES, matrix, native_bootstrap, provider

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(180)]


def _observe(url: str, port: int, cases: list[tuple[str, str, dict[str, str]]]) -> dict[str, Any]:
    out = {}
    with httpx.Client() as client:
        for label, path, headers in cases:
            r = client.get(url + path, headers=headers)
            realm = r.headers.get("www-authenticate", "").replace(f":{port}/", ":PORT/")
            body = r.text if r.status_code != 200 else ""
            out[label] = (r.status_code, body, realm)
    return out


def test_jwt_answers_exactly_like_native_jwt_authn(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    keys = Keys()
    chain = Chain([Jwt({"providers": {"main": provider(keys)}, "rules": RULES})], name="default")
    config = GatewayConfig.model_validate(
        {
            "listener": {"port": 0},
            "admin": {"port": 0},
            "sidecar": {"address": "127.0.0.1:0", "metrics_address": ""},
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{echo_upstream.port}"}},
            "chains": {"default": []},
            "default_chain": "default",
            "routes": [{"prefix": "/", "upstream": "echo"}],
        }
    )
    with ExitStack() as stack:
        sidecar = stack.enter_context(SidecarThread({"default": chain}, default_chain="default"))
        bootstrap = render_bootstrap(
            Gateway(config, {"default": chain}, "<differential>"),
            sidecar=sidecar.address,
            listener_port=0,
            admin_port=0,
            access_log="",
        )
        native = native_bootstrap(keys, echo_upstream.port)["static_resources"]
        native["clusters"][0]["name"] = native["clusters"][0]["load_assignment"]["cluster_name"] = (
            "native_echo"
        )
        manager = native["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "native_echo"
        bootstrap["static_resources"]["listeners"].append(native["listeners"][0])
        bootstrap["static_resources"]["clusters"].append(native["clusters"][0])
        envoy = envoy_factory(bootstrap)

        envoykit_listener = next(n for n in envoy.listener_ports if n != "native")
        cases = matrix(keys)
        by_native = _observe(envoy.url("", "native"), envoy.listener_port("native"), cases)
        by_envoykit = _observe(
            envoy.url("", envoykit_listener), envoy.listener_port(envoykit_listener), cases
        )

    different = {k: (by_native[k], by_envoykit[k]) for k in by_native if by_native[k] != by_envoykit[k]}
    assert not different, "\n".join(
        f"{k}\n  native:   {n}\n  envoykit: {e}" for k, (n, e) in different.items()
    )
    # The matrix exercised what it claims.
    statuses = {label: status for label, (status, _, _) in by_native.items()}
    assert statuses["valid"] == statuses["query-param"] == statuses["optional-missing"] == 200
    assert statuses["wrong-audience"] == 403
    for label in ("expired", "not-yet-valid", "wrong-issuer", "unknown-kid", "alg-none", "hs256-public-key",
                  "tampered", "malformed", "missing"):  # fmt: skip
        assert statuses[label] == 401, label
    assert by_native["missing"][1:] == ("Jwt is missing", 'Bearer realm="http://127.0.0.1:PORT/api"')
