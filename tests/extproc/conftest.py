"""Every servicer test that uses ``support.serve`` runs on the grpc.aio and the native h2 server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import support


@pytest.fixture(autouse=True, params=["aio", "h2"])
def server_model(request: pytest.FixtureRequest) -> Iterator[str]:
    support.SERVER_MODEL[0] = request.param
    yield request.param
    support.SERVER_MODEL[0] = "aio"
