"""Fixtures of the rate-limit service tests: a real ``redis-server`` on a free port, the service
in a background thread (every test that starts one runs against both servers, ``h2`` and
``grpcio``), and a gRPC client."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.ratelimit import RateLimitServer
from envoykit.testing._net import free_port, wait_for


class RedisServer:
    """``redis-server`` on a loopback port; ``stop()``/``start()`` keep the port (restart tests)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def command(self, *args: str) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            parts = [f"*{len(args)}\r\n".encode()] + [f"${len(a)}\r\n{a}\r\n".encode() for a in args]
            s.sendall(b"".join(parts))
            return s.recv(65536)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


class RlsThread:
    """A ``RateLimitServer`` on its own event loop in a background thread."""

    def __init__(self, server: RateLimitServer) -> None:
        self.server = server
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RlsThread:
        self._thread.start()
        assert self._ready.wait(20), "the rate-limit server did not start"
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop(self.grace)

    grace = 0.5

    def stop(self, grace: float = 0.5) -> None:
        self.grace = grace
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(params=["h2", "grpcio"])
def rls_server_kind(request: pytest.FixtureRequest) -> str:
    """The server of the rate-limit service under test (``RateLimitServer(server=...)``)."""
    return str(request.param)


@pytest.fixture
def rls_factory(rls_server_kind: str) -> Iterator[Any]:
    started: list[RlsThread] = []

    def make(config_dir: Path, **options: Any) -> RlsThread:
        options.setdefault("address", "127.0.0.1:0")
        options.setdefault("server", rls_server_kind)
        options.setdefault("reload_interval", 0.05)
        thread = RlsThread(RateLimitServer(config_dir, **options)).start()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


class RlsClient:
    """``ShouldRateLimit`` over real gRPC: ``client.ask(domain, [[(k, v), ...], ...])``."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    def ask(self, domain: str, descriptors: list[list[tuple[str, str]]], hits: int = 0) -> Any:
        request = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits)
        for entries in descriptors:
            d = request.descriptors.add()
            for key, value in entries:
                d.entries.add(key=key, value=value)
        return self.stub.ShouldRateLimit(request, timeout=5)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def rls_client() -> Iterator[Any]:
    clients: list[RlsClient] = []

    def make(address: str) -> RlsClient:
        clients.append(RlsClient(address))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
