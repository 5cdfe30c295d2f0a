"""envoykit's ``cors`` in the sidecar against Envoy 1.40's native ``envoy.filters.http.cors``: the
same policy, the same probes (origins x preflight/simple x routes with and without credentials),
identical status, identical CORS response headers, and the same requests reaching the upstream."""

from __future__ import annotations

from typing import Any

import pytest

from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit_filters import Cors

from .cors_cases import ENVOYKIT, counts, native_bootstrap, observe, probes

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(180)]


def test_native_bootstrap_is_valid(echo_upstream: EchoUpstream, envoy_validate: Any) -> None:
    envoy_validate(native_bootstrap(echo_upstream.port))


def test_sidecar_cors_answers_exactly_like_native_cors(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    cases = probes()
    native = envoy_factory(native_bootstrap(echo_upstream.port))
    by_native = observe(native.url(""), echo_upstream, cases)

    sidecar = gateway_factory(Cors(ENVOYKIT), access_log=False)
    by_envoykit = observe(sidecar.url(""), echo_upstream, cases)

    different = {
        label: (by_native[label], by_envoykit[label])
        for label in by_native
        if by_native[label] != by_envoykit[label]
    }
    assert not different, "\n".join(
        f"{k}\n  native:   {n}\n  envoykit: {e}" for k, (n, e) in different.items()
    )

    # The matrix exercised what it claims. Allowed origins per path: /api 3, /partners 1, /star
    # every non-empty one (6), /nofwd 3 (but it answers all 6 non-empty origins' preflights);
    # 3 preflight kinds and 6 kinds in all: 48 local answers, 78 echoed origins.
    assert counts(by_native) == {"local": 48, "echoed": 78}, counts(by_native)
    assert by_native["/api exact preflight"][:2] == (200, False)
    assert by_native["/api disallowed preflight"][1] is True  # forwarded, as Envoy does by default
    assert by_native["/nofwd/c disallowed preflight"][:2] == (200, False)
    assert ("access-control-allow-headers", "") in by_native["/star/b exact preflight-bare"][2]
    assert ("access-control-allow-origin", "upstream") in by_native["/api disallowed simple"][2]

    # Envoy counts valid/invalid origins; envoykit's allowed/denied count the same requests.
    valid, invalid = (
        native.stat("http.native.cors.origin_valid"),
        native.stat("http.native.cors.origin_invalid"),
    )
    registry = sidecar.sidecar.registry
    assert registry.get_sample_value("envoykit_cors_allowed_total") == valid
    assert registry.get_sample_value("envoykit_cors_denied_total") == invalid
