"""Fixtures of the transcoder tests: the descriptor set (built with grpcio-tools) and a live
grpcio bookstore backend."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .bookstore.server import build_descriptor_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_descriptor_set(tmp_path_factory.mktemp("protos") / "bookstore.pb")


@pytest.fixture(scope="session")
def bookstore(descriptor_set: Path) -> Iterator[int]:
    """The port of a running bookstore gRPC server. It runs in its own process: grpcio server
    threads beside the test's own protobuf work have crashed the interpreter during garbage
    collection (rarely)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.transcoder.bookstore.server", str(descriptor_set)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready <port>", printed once the server listens
        if not line.startswith("ready "):
            raise RuntimeError(f"the bookstore backend did not start (exit code {proc.poll()})")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
