"""A sidecar server in a background thread, for tests, notebooks and the demo.

The server gets its own event loop in its own thread, so synchronous code (a pytest test, the
demo driving Envoy with httpx) can use it with a ``with`` block. Start-up waits for the server
to be bound (a bounded wait on a condition, never a sleep) and re-raises start-up errors in the
caller's thread; exit stops it with a bounded grace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from .._chain import Chain
from ._server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_THREADS,
    ServerModel,
    ServiceFactory,
    SidecarServer,
    new_event_loop_factory,
)

__all__ = ["SidecarThread"]

log = logging.getLogger("envoykit.runtime")

T = TypeVar("T")


class SidecarThread:
    """``with SidecarThread(chains={"default": chain}) as sc:`` serves on ``sc.address``.

    Defaults to ``127.0.0.1:0`` (the OS picks a free port; ``sc.port`` tells which).
    """

    def __init__(
        self,
        chains: Mapping[str, Chain],
        *,
        default_chain: str | None = None,
        address: str = "127.0.0.1:0",
        chain_header: str | None = None,
        metrics_address: str = "",
        registry: CollectorRegistry | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        services: Sequence[ServiceFactory] | None = None,
        startup_timeout: float = 10.0,
        stop_grace: float = 2.0,
        use_uvloop: bool = False,
        server_model: ServerModel = "aio",
        threads: int = DEFAULT_THREADS,
    ) -> None:
        # Built here so configuration errors surface in the caller's thread right away.
        self.server = SidecarServer(
            chains,
            default_chain=default_chain,
            address=address,
            chain_header=chain_header,
            metrics_address=metrics_address,
            registry=registry,
            max_message_bytes=max_message_bytes,
            services=services,
            server_model=server_model,
            threads=threads,
        )
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.use_uvloop = use_uvloop
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    # -- where it listens -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def registry(self) -> CollectorRegistry:
        return self.server.registry

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SidecarThread:
        if self._thread is not None:
            raise RuntimeError("this SidecarThread was already started")
        self._thread = threading.Thread(target=self._run, name="envoykit-sidecar", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            self.stop()
            raise TimeoutError(f"the sidecar did not start within {self.startup_timeout}s")
        if self._error is not None:
            self._thread.join(self.startup_timeout)
            raise self._error
        return self

    def stop(self) -> None:
        """Graceful stop (``stop_grace`` seconds for in-flight streams); waits, bounded."""
        loop, event, thread = self._loop, self._stop_event, self._thread
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed in between
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.stop_grace + 10.0)
            if thread.is_alive():
                log.warning("the sidecar thread did not stop within %.1fs", self.stop_grace + 10.0)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's event loop and return its result (bounded)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the sidecar is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def __enter__(self) -> SidecarThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        factory = new_event_loop_factory() if self.use_uvloop else None
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(self._main())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("the sidecar thread failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop_event.wait()
        await self.server.stop(self.stop_grace)
