"""Every end-to-end test here runs against both sidecar server models (grpc.aio and threads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from envoykit.testing import LiveGateway


@pytest.fixture(params=["aio", "threads"])
def gateway_factory(
    request: pytest.FixtureRequest, gateway_factory: Callable[..., LiveGateway]
) -> Callable[..., LiveGateway]:
    def factory(chains: Any, **options: Any) -> LiveGateway:
        return gateway_factory(chains, server_model=request.param, **options)

    return factory
