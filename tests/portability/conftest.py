"""Shared fixtures of the portability tests: the test filters built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit.envoyconfig import render_bootstrap, wasm_filter
from envoykit.gateway import Gateway, GatewayConfig

MODULE = Path(__file__).with_name("every_hook.py")


@pytest.fixture(scope="session")
def every_hook_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("ziglang")
    from envoykit.wasm._filters import build_filter_wasm

    out = tmp_path_factory.mktemp("wasm") / "every_hook.wasm"
    build_filter_wasm(MODULE, out)
    return out


def wasm_bootstrap(upstream_port: int, module: Path, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy (ports from the OS) running ``specs`` from ``module`` in-proxy, routing to the upstream."""
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{upstream_port}"}},
            "routes": [{"prefix": "/", "upstream": "echo"}],
        }
    )
    return render_bootstrap(
        Gateway(config, {}, "<test>"),
        listener_port=0,
        admin_port=0,
        in_proxy=[wasm_filter(str(module), specs)],
    )
