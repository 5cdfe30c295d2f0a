"""envoykit's ``cors`` compiled into Envoy as Wasm answers the CORS matrix exactly like Envoy's
native filter and like the sidecar: native == Wasm == sidecar, probe by probe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit.gateway._load import resolve_filter
from envoykit.testing import EchoUpstream, EnvoyFactory

from ..differential.cors_cases import ENVOYKIT, native_bootstrap, observe, probes
from .conftest import wasm_bootstrap

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]


def test_native_wasm_and_sidecar_cors_give_identical_answers(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, gateway_factory: Any
) -> None:
    cases = probes()
    native = envoy_factory(native_bootstrap(echo_upstream.port))
    by_native = observe(native.url(""), echo_upstream, cases)

    wasm = envoy_factory(
        wasm_bootstrap(echo_upstream.port, every_hook_wasm, [{"filter": "cors", "config": ENVOYKIT}]),
        ready_timeout=60,
    )
    by_wasm = observe(wasm.url(""), echo_upstream, cases)

    sidecar = gateway_factory(resolve_filter("cors")(ENVOYKIT), access_log=False)
    by_sidecar = observe(sidecar.url(""), echo_upstream, cases)

    for label in by_native:
        assert by_wasm[label] == by_native[label], label
        assert by_sidecar[label] == by_native[label], label
    # The filter's counters inside Envoy (/stats) agree with the native filter's.
    assert wasm.stat("wasmcustom.envoykit.cors.allowed") == native.stat("http.native.cors.origin_valid")
    assert wasm.stat("wasmcustom.envoykit.cors.denied") == native.stat("http.native.cors.origin_invalid")
    assert wasm.stat("wasmcustom.envoykit.cors.preflights") == sum(
        1 for _, reached, *_ in by_native.values() if not reached
    )


def test_bad_cors_config_is_refused_by_envoy_at_load(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_validate: Any
) -> None:
    from envoykit.testing import EnvoyConfigError

    bad = {"allow_origin_regexes": ["https://(unclosed"]}
    with pytest.raises(EnvoyConfigError) as info:
        envoy_validate(
            wasm_bootstrap(echo_upstream.port, every_hook_wasm, [{"filter": "cors", "config": bad}])
        )
    assert "filters[0].config.allow_origin_regexes: invalid regex 'https://(unclosed'" in info.value.output
