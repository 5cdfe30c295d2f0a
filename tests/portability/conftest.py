"""Shared fixtures of the portability tests: the test filters built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

MODULE = Path(__file__).with_name("every_hook.py")


@pytest.fixture(scope="session")
def every_hook_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("ziglang")
    from envoykit.wasm._filters import build_filter_wasm

    out = tmp_path_factory.mktemp("wasm") / "every_hook.wasm"
    build_filter_wasm(MODULE, out)
    return out
