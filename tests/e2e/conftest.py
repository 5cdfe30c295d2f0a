"""Every end-to-end test here runs against every sidecar server model (grpc.aio, threads, native h2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from envoykit.testing import LiveGateway


@pytest.fixture(params=["aio", "threads", "h2"])
def gateway_factory(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., LiveGateway]
) -> Callable[..., LiveGateway]:
    def factory(chains: Any, **options: Any) -> LiveGateway:
        return gateway_factory(chains, server_model=request.param, **options)

    return factory
