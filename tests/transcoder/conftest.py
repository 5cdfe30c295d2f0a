"""Fixtures of the transcoder tests: the descriptor set (built with grpcio-tools) and a live
grpcio bookstore backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .bookstore.server import build_descriptor_set, serve


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_descriptor_set(tmp_path_factory.mktemp("protos") / "bookstore.pb")


@pytest.fixture(scope="session")
def bookstore(descriptor_set: Path) -> Iterator[int]:
    """The port of a running bookstore gRPC server."""
    server, port = serve(descriptor_set.read_bytes())
    yield port
    server.stop(None)
