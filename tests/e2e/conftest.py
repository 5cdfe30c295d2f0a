"""Every end-to-end test here runs against every sidecar server model (grpc.aio, threads, h2)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

from envoykit.testing import LiveGateway
from envoykit.testing._live import _as_chains


@pytest.fixture(params=["aio", "threads", "h2"])
def gateway_factory(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., LiveGateway]
) -> Callable[..., LiveGateway]:
    def factory(chains: Any, **options: Any) -> LiveGateway:
        if request.param == "h2":
            built = _as_chains(chains)
            if any(c.async_hooks for c in built.values()):
                # The skipped test's frame (and its filters) become garbage: collect it here, on
                # the main thread (e.g. regorus engines must not be dropped on another thread).
                request.addfinalizer(gc.collect)
                pytest.skip("async hooks cannot run on the h2 server (refused at load)")
            chains = built
        return gateway_factory(chains, server_model=request.param, **options)

    return factory
