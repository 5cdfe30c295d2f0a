"""Shared data inside Envoy is one store for every worker's Wasm VM (what a local rate limiter
needs): a compare-and-swap counter counts each request exactly once across workers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from envoykit import LocalSharedData
from envoykit.testing import EchoUpstream, EnvoyFactory

from .conftest import wasm_bootstrap

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]


def test_local_store_compare_and_swap():
    store = LocalSharedData()
    assert store.get("k") == (None, 0)
    assert store.set("k", b"1", cas=12345)  # missing key: set, as Envoy does
    value, cas = store.get("k")
    assert value == b"1"
    assert store.set("k", b"2", cas)
    assert not store.set("k", b"3", cas)  # stale token
    assert store.get("k")[0] == b"2"
    assert store.set("k", b"4")  # cas 0: unconditional


def test_counter_is_shared_by_all_workers(
    every_hook_wasm: Path, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> None:
    bootstrap = wasm_bootstrap(echo_upstream.port, every_hook_wasm, [{"filter": "visits"}])
    envoy = envoy_factory(bootstrap, concurrency=2, ready_timeout=90)
    seen = []
    for _ in range(12):
        with httpx.Client(timeout=10) as client:  # a new connection each time: spread over workers
            assert client.get(envoy.url("/"), headers={"x-counter": "t"}).status_code == 200
        seen.append(int(echo_upstream.last.header("x-visit") or 0))
    assert sorted(seen) == list(range(1, 13))
