"""The sidecar server lifecycle: bind, serve, report health and metrics, drain, stop.

Protocol code (ext_proc today, ext_authz later) plugs in as ``SidecarService`` objects; this
module owns everything around them, so each protocol is only its servicer. The order of a
graceful stop matters: health flips to NOT_SERVING first (health checkers stop sending new
requests), then ``grpc.aio.Server.stop(grace)`` lets in-flight streams finish, cancelling only
what is still running when the grace period ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import gc
import logging
import os
import signal
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import grpc
from google.protobuf.internal import api_implementation
from prometheus_client import CollectorRegistry

from .._chain import Chain
from .._errors import ConfigError
from ._address import DEFAULT_ADDRESS, parse_listen_address
from ._filter_metrics import PrometheusFilterMetrics
from ._h2 import HEALTH_CHECK_PATH, H2Server
from ._health import HealthState
from ._metrics import MetricsEndpoint, SidecarMetrics
from ._router import CHAIN_METADATA_KEY, ChainRouter

__all__ = [
    "SidecarServer",
    "SidecarService",
    "ServiceFactory",
    "run_sidecar",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_THREADS",
    "ServerModel",
    "check_protobuf_backend",
    "tune_garbage_collector",
]

#: ``aio``: one grpc.aio event loop (lowest tail latency, the default).
#: ``threads``: grpcio's thread-pool server (measured ~20% less CPU per stream; each in-flight
#: stream holds a thread, so size ``threads`` to the concurrent requests you expect).
#: ``h2``: the native HTTP/2 server of ``runtime._h2`` (an epoll thread over libnghttp2 that
#: hands every stream event of a loop iteration to Python in one call): a fraction of grpcio's
#: transport cost per stream; sync hooks only (ext_proc, ext_authz gRPC or HTTP).
ServerModel = Literal["aio", "threads", "h2"]
DEFAULT_THREADS = 16

log = logging.getLogger("envoykit.runtime")

#: Largest gRPC message either way; buffered bodies travel in one message.
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class SidecarService(Protocol):
    """One gRPC service a sidecar serves (ext_proc's ``ExternalProcessor``, ...)."""

    #: Fully qualified gRPC service name, also reported by the health service.
    service_name: str

    def add_to_server(self, server: grpc.aio.Server | grpc.Server) -> None: ...


#: Builds a service from the server's chain router and metrics.
ServiceFactory = Callable[[ChainRouter, SidecarMetrics], SidecarService]


def check_protobuf_backend() -> str:
    """Warn when protobuf is not on upb: pure-Python protobuf costs ~100 µs per message."""
    backend = api_implementation.Type()
    if backend != "upb":
        log.warning(
            "protobuf runs on the %r backend, not 'upb': every message costs ~100 µs more "
            "(unset PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION, install a protobuf wheel)",
            backend,
        )
    return backend


class SidecarServer:
    """A grpc.aio server running envoykit chains for Envoy, with health and metrics.

    ``await start()`` binds and serves (``port``/``address`` then tell where), ``await stop(grace)``
    drains, ``await wait()`` returns once the server has terminated.

    - ``chains``: name -> ``Chain``. Each chain's ``observer`` is set to this server's metrics.
    - ``default_chain``: runs when nothing names a chain (``None``: the only chain, if there is
      exactly one; otherwise unnamed requests get a 500).
    - ``address``: ``host:port``, ``[v6]:port`` or ``unix:/abs/path.sock``; port 0 lets the OS pick.
    - ``chain_header``: a request header that names the chain. Off by default; only safe when
      Envoy sets (or strips) it, since clients can send any header.
    - ``metrics_address``: ``host:port`` for Prometheus ``/metrics``; ``""`` turns it off.
    - ``registry``: where the metrics live (default: a new one per server).
    - ``max_message_bytes``: largest gRPC message either way (a buffered body is one message).
    - ``drain_delay``: seconds between NOT_SERVING and refusing new streams on stop.
    - ``services``: protocol service factories (default: ext_proc).
    """

    def __init__(
        self,
        chains: Mapping[str, Chain],
        *,
        default_chain: str | None = None,
        address: str = DEFAULT_ADDRESS,
        chain_header: str | None = None,
        metrics_address: str = "",
        registry: CollectorRegistry | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        drain_delay: float = 0.0,
        services: Sequence[ServiceFactory] | None = None,
        server_model: ServerModel = "aio",
        threads: int = DEFAULT_THREADS,
    ) -> None:
        if server_model not in ("aio", "threads", "h2"):
            raise ValueError(f"server_model must be 'aio', 'threads' or 'h2', not {server_model!r}")
        if server_model == "h2":
            _check_h2_chains(chains)
        self.server_model = server_model
        self.threads = threads
        self.listen = parse_listen_address(address)
        self.metrics = SidecarMetrics(registry)
        #: The filters' own metrics (``self.metrics.counter(...)``), in the same registry.
        self.filter_metrics = PrometheusFilterMetrics(self.metrics.registry)
        for chain in chains.values():
            chain.bind_metrics(self.filter_metrics)
        self.router = ChainRouter(
            chains, default_chain=default_chain, chain_header=chain_header, observer=self.metrics
        )
        self.max_message_bytes = max_message_bytes
        #: Seconds between NOT_SERVING and refusing new streams (let health checkers notice).
        self.drain_delay = drain_delay
        if services is None:
            from ..extproc import ExtProcService  # the default protocol; imported late: it imports us

            services = (ExtProcService,)
        self.services = [factory(self.router, self.metrics) for factory in services]
        if server_model == "h2":
            _check_h2_services(self.services)
        self.health = HealthState(
            (s.service_name for s in self.services), threaded=server_model in ("threads", "h2")
        )
        self._metrics_endpoint = (
            MetricsEndpoint(self.metrics.registry, metrics_address) if metrics_address else None
        )
        self._server: grpc.aio.Server | grpc.Server | H2Server | None = None
        #: The ``threads`` model's workers: grpcio does not shut the pool down, ``_stop`` does.
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._bound = self.listen
        self._stopping: asyncio.Task[None] | None = None

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    @property
    def port(self) -> int:
        """The bound TCP port (0 for a unix socket, or before ``start``)."""
        return self._bound.port

    @property
    def address(self) -> str:
        """The bound address as a gRPC target: ``127.0.0.1:PORT``, ``[::1]:PORT``, ``unix:/p``."""
        return self._bound.target

    @property
    def metrics_port(self) -> int:
        return self._metrics_endpoint.port if self._metrics_endpoint is not None else 0

    async def start(self) -> None:
        """Bind, start serving and report SERVING. Raises ``OSError`` when it cannot bind."""
        if self._server is not None:
            raise RuntimeError("this SidecarServer was already started")
        check_protobuf_backend()
        if self.server_model == "h2":
            await self._start_h2()
            await self._start_rest(self._server)
            return
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
        ]
        server: grpc.aio.Server | grpc.Server
        if self.server_model == "threads":
            pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="envoykit-rpc")
            self._pool = pool
            server = grpc.server(pool, options=options)
        else:
            server = grpc.aio.server(options=options)
        loop = asyncio.get_running_loop()
        for service in self.services:
            if hasattr(service, "loop"):
                service.loop = loop  # the thread-pool model runs async hooks on this loop
            service.add_to_server(server)
        self.health.add_to_server(server)
        await self.health.set_not_serving()
        target = self.listen.target
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"envoykit sidecar cannot listen on {target}: {exc}") from exc
        if not self.listen.is_unix and port == 0:
            raise OSError(f"envoykit sidecar cannot listen on {target}")
        self._bound = self.listen.with_port(port)
        if isinstance(server, grpc.aio.Server):
            await server.start()
        else:
            server.start()
        self._server = server
        await self._start_rest(server)

    async def _start_h2(self) -> None:
        """Bind and serve on the native h2 server (``H2BuildError`` if it cannot be built here)."""
        from ._h2 import H2Server, health_answer, listen_socket, load_extension

        await asyncio.to_thread(load_extension)  # compiles on the first start (a few seconds, once)
        streaming = [h2 for s in self.services if (h2 := getattr(s, "h2_streaming", None)) is not None]
        paths = tuple(path for path, _ in (f() for f in streaming))
        handler = streaming[0]()[1] if streaming else None
        health = self.health
        #: Unary methods (ext_authz Check): path -> fn(message, chain metadata) -> answer.
        methods: dict[bytes, Any] = dict(
            h2() for s in self.services if (h2 := getattr(s, "h2_unary", None)) is not None
        )

        def unary(calls: list[tuple[bytes, bytes, bytes | None]]) -> list[Any]:
            # C passes only the paths given as ``unary`` below; any other is UNIMPLEMENTED there.
            return [
                health_answer(health, message) if path == HEALTH_CHECK_PATH else methods[path](message, meta)
                for path, message, meta in calls
            ]

        await self.health.set_not_serving()
        sock = listen_socket(self.listen, "envoykit sidecar")
        server = H2Server(
            sock,
            unary,  # type: ignore[arg-type]  # with ``metadata`` set, calls carry its value
            max_message=self.max_message_bytes,
            stream_handler=handler,
            streaming=paths,
            unary=(HEALTH_CHECK_PATH, *methods),
            metadata=CHAIN_METADATA_KEY.encode(),
            name="envoykit-sidecar-h2",
        )
        self._bound = self.listen.with_port(0 if self.listen.is_unix else sock.getsockname()[1])
        server.start()
        self._server = server

    async def _start_rest(self, server: grpc.aio.Server | grpc.Server | H2Server | None) -> None:
        assert server is not None
        if self._metrics_endpoint is not None:
            try:
                self._metrics_endpoint.start()
            except OSError:
                await _stop_server(server, None)
                raise
        for service in self.services:
            # Services listening on their own address (the HTTP ext_authz server).
            start_serving = getattr(service, "start_serving", None)
            if start_serving is not None:
                try:
                    await start_serving()
                except OSError:
                    await _stop_server(server, None)
                    raise
        await self.health.set_serving()
        log.info(
            "envoykit sidecar serving %s on %s (chains: %s; default: %s)",
            ", ".join(s.service_name.rsplit(".", 1)[-1] for s in self.services),
            self.address,
            ", ".join(sorted(self.router.chains)),
            self.router.default_chain or "-",
        )

    async def stop(self, grace: float | None = 5.0) -> None:
        """Graceful stop: NOT_SERVING, refuse new streams, let in-flight ones run up to
        ``grace`` seconds, cancel the rest. A second call waits for the first; a second call
        with ``grace=None`` cancels what is still draining at once."""
        if self._server is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(self._server, grace))
        elif grace is None:
            await _stop_server(self._server, None)
        await asyncio.shield(self._stopping)

    async def _stop(self, server: grpc.aio.Server | grpc.Server | H2Server, grace: float | None) -> None:
        await self.health.shutting_down()
        if self.drain_delay > 0:
            await asyncio.sleep(self.drain_delay)
        log.info("envoykit sidecar stopping (grace %ss)", grace)
        stopping = [
            stop_serving(grace) for s in self.services if (stop_serving := getattr(s, "stop_serving", None))
        ]
        await asyncio.gather(_stop_server(server, grace), *stopping)
        if self._pool is not None:  # the streams are finished: let the idle workers exit
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.stop()
        if self.listen.path is not None:
            _remove_socket(self.listen.path)

    async def wait(self) -> None:
        """Return when the server has terminated (after ``stop``)."""
        server = self._server
        if isinstance(server, grpc.aio.Server):
            await server.wait_for_termination()
        elif isinstance(server, H2Server):
            await asyncio.to_thread(server.done.wait)
        elif server is not None:
            await asyncio.to_thread(server.wait_for_termination)


async def _stop_server(server: grpc.aio.Server | grpc.Server | H2Server, grace: float | None) -> None:
    if isinstance(server, grpc.aio.Server):
        await server.stop(grace)
        return
    if isinstance(server, H2Server):
        # GOAWAY, finish in-flight streams within grace; a second call (grace None) hurries it.
        await asyncio.to_thread(server.stop, grace or 0.0)
        return
    done = server.stop(grace)  # a threading.Event, set once in-flight streams are finished
    await asyncio.to_thread(done.wait, (grace or 0) + 10.0)


def _check_h2_chains(chains: Mapping[str, Chain]) -> None:
    """The h2 model runs every stream's hooks on its one loop thread: async hooks cannot run."""
    for name, chain in chains.items():
        hooks = chain.async_hooks
        if hooks:
            raise ConfigError(
                f"chain {name!r} has async hooks ({', '.join(hooks)}): the h2 server runs hooks on "
                "its loop thread and cannot await; make them plain `def` or use server aio/threads",
                field="sidecar.server",
            )


def _check_h2_services(services: Sequence[SidecarService]) -> None:
    """h2 serves ext_proc streams, gRPC ext_authz checks and services with their own listener
    (HTTP ext_authz)."""
    streaming = 0
    for service in services:
        if getattr(service, "h2_streaming", None) is not None:
            streaming += 1
        elif getattr(service, "h2_unary", None) is None and getattr(service, "start_serving", None) is None:
            raise ConfigError(
                f"{service.service_name} cannot be served by the h2 server; use server aio/threads",
                field="sidecar.server",
            )
    if streaming > 1:
        raise ConfigError("the h2 server serves one streaming service", field="sidecar.server")


def tune_garbage_collector() -> None:
    """Make Python's cyclic GC cheap for a request server.

    Each request allocates a few hundred short-lived objects (protobuf messages, header lists,
    per-request state); with the default thresholds the collector runs every ~700 allocations
    and re-scans everything loaded at start-up. Freezing the start-up heap and collecting the
    young generation less often removes most of that work; requests create almost no cycles, so
    memory stays flat. Process-wide, so it is the process owner's call: ``run_sidecar`` (what
    ``envoykit serve`` runs) makes it once, before serving; embedders may too.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 20_000), gen1, gen2)


def _remove_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def new_event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is importable (faster grpc.aio), else ``None``."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_sidecar(
    chains: Mapping[str, Chain],
    *,
    default_chain: str | None = None,
    address: str = DEFAULT_ADDRESS,
    chain_header: str | None = None,
    metrics_address: str = "",
    registry: CollectorRegistry | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    drain_seconds: float = 5.0,
    drain_delay: float = 0.0,
    services: Sequence[ServiceFactory] | None = None,
    server_model: ServerModel = "aio",
    threads: int = DEFAULT_THREADS,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop gracefully (``drain_seconds`` of grace).

    Blocking; for the CLI. Runs on uvloop when it is installed. A second signal during the
    drain cancels the remaining streams at once. A fatal error in native code (a segfault in an
    extension module) prints every thread's Python stack to stderr before the process dies
    (``faulthandler``), so a crash in production leaves a trace.
    """
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable(all_threads=True)
        except (AttributeError, ValueError, OSError):  # stderr is not a file (embedded)
            pass
    server = SidecarServer(
        chains,
        default_chain=default_chain,
        address=address,
        chain_header=chain_header,
        metrics_address=metrics_address,
        registry=registry,
        max_message_bytes=max_message_bytes,
        drain_delay=drain_delay,
        services=services,
        server_model=server_model,
        threads=threads,
    )
    tune_garbage_collector()
    with asyncio.Runner(loop_factory=new_event_loop_factory()) as runner:
        runner.run(_serve_until_signal(server, drain_seconds))


async def _serve_until_signal(server: SidecarServer, grace: float) -> None:
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    hurry = asyncio.Event()

    def on_signal() -> None:
        if signalled.is_set():
            hurry.set()
        signalled.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await server.start()
        stopped = asyncio.ensure_future(server.wait())
        signal_wait = asyncio.ensure_future(signalled.wait())
        await asyncio.wait({stopped, signal_wait}, return_when=asyncio.FIRST_COMPLETED)
        signal_wait.cancel()
        if signalled.is_set():
            log.info("signal received: draining (up to %ss; signal again to stop now)", grace)
            stopping = asyncio.ensure_future(server.stop(grace))
            hurried = asyncio.ensure_future(hurry.wait())
            await asyncio.wait({stopping, hurried}, return_when=asyncio.FIRST_COMPLETED)
            if not stopping.done():
                log.info("second signal: cancelling the remaining streams")
                await server.stop(None)
            await stopping
            hurried.cancel()
        await stopped
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
