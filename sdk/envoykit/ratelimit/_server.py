"""The gRPC rate-limit service Envoy's ``envoy.filters.http.ratelimit`` calls, with hot reload.

``RateLimitServer`` serves ``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``
and gRPC health ``Check`` on one of two servers: ``h2`` (default), the native HTTP/2 front end
of ``_h2`` that hands every call of an event-loop iteration to ``BatchHandler`` at once (one
Redis pipeline per batch, no per-call thread hand-off); or ``grpcio``, grpcio's thread-pool
server (``threads``, default 8; its per-call machinery costs ~10x a whole decision). Prometheus
``/metrics`` on its own port either way. ``ConfigWatcher`` re-reads the config
directory when its contents change: a good set replaces the old one at once; a bad file is
logged with file, document path and reason, counted, and the previous config stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, Literal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from .._errors import ConfigError
from ..runtime._address import parse_listen_address
from ..runtime._h2 import H2BuildError, H2Server, health_answer, listen_socket, load_extension
from ..runtime._health import HealthState
from ..runtime._metrics import MetricsEndpoint
from ..runtime._server import check_protobuf_backend, new_event_loop_factory, tune_garbage_collector
from ._backends import Backend, make_backend
from ._config import DomainConfig, load_directory, read_directory
from ._limiter import Algorithm, Call, Decision, Limiter

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_THREADS",
    "ConfigWatcher",
    "RateLimitServer",
    "RateLimitServicer",
    "run_ratelimit",
]

log = logging.getLogger("envoykit.ratelimit")
SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"
DEFAULT_PORT = 8081
DEFAULT_THREADS = 8
#: ``h2``: the native HTTP/2 front end (batches calls); ``grpcio``: grpcio's thread pool;
#: ``auto``: h2 when it can be built and loaded here, else grpcio.
ServerKind = Literal["auto", "h2", "grpcio"]
_UNIT_NAMES = {1: "second", 2: "minute", 3: "hour", 4: "day", 5: "month", 6: "year", 7: "week"}
_UNIT_ENUM = {name: number for number, name in _UNIT_NAMES.items()}
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
_Response = rls_pb2.RateLimitResponse
_Status = rls_pb2.RateLimitResponse.DescriptorStatus
_Limit = rls_pb2.RateLimitResponse.RateLimit
_Duration = duration_pb2.Duration
_Header = base_pb2.HeaderValue
_Request = rls_pb2.RateLimitRequest
_RLS_PATH = f"/{SERVICE_NAME}/ShouldRateLimit".encode()
_HEALTH_CHECK = b"/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_INTERNAL = (13, "internal error")
Answer = bytes | tuple[int, str]


class ConfigWatcher:
    """The current config of a directory; ``check()`` reloads it when the files changed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config: dict[str, DomainConfig] = {}
        self.loads = 0
        self.errors = 0
        #: The last load error (``str`` of a ``ConfigError``), or None after a good load.
        self.last_error: str | None = None
        self._seen: list[tuple[str, str]] | None = None

    def check(self) -> bool:
        """Reload if anything changed; True when a new config took effect."""
        try:
            files = read_directory(self.directory)
        except OSError as exc:
            files = None
            problem = f"{self.directory}: cannot read the config directory: {exc}"
        if files is not None and files == self._seen:
            return False
        if files is not None:
            self._seen = files
            try:
                config = load_directory(self.directory, files)
            except ConfigError as exc:
                problem = str(exc)
            else:
                self.config = config
                self.loads += 1
                self.last_error = None
                log.info("rate-limit config loaded: %s", ", ".join(sorted(config)) or "no domains")
                return True
        if problem != self.last_error:
            # Logged before it is published: whoever sees last_error also finds the log line.
            log.error("rate-limit config not loaded, the previous one stays in force: %s", problem)
            self.errors += 1
            self.last_error = problem
        return False

    def collect(self) -> Iterator[Metric]:
        loads = CounterMetricFamily("envoykit_ratelimit_config_loads", "Config sets loaded")
        loads.add_metric([], self.loads)
        errors = CounterMetricFamily("envoykit_ratelimit_config_load_errors", "Config reloads refused")
        errors.add_metric([], self.errors)
        yield loads
        yield errors


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """``ShouldRateLimit``: the protobuf adapter around ``Limiter`` (synchronous, thread-safe)."""

    def __init__(self, limiter: Limiter, watcher: ConfigWatcher) -> None:
        self.limiter = limiter
        self.watcher = watcher

    def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        decision = self.limiter.decide(self.watcher.config, *call_of(request))
        return response_of(decision)


def call_of(request: rls_pb2.RateLimitRequest) -> Call:
    """(domain, descriptors, hits_addend, overrides) of a ``RateLimitRequest``."""
    descriptors = []
    overrides: list[tuple[int, str] | None] | None = None
    for i, d in enumerate(request.descriptors):
        descriptors.append(tuple([(e.key, e.value) for e in d.entries]))
        if d.HasField("limit"):
            unit = _UNIT_NAMES.get(d.limit.unit)
            if unit:
                if overrides is None:
                    overrides = [None] * len(request.descriptors)
                overrides[i] = (d.limit.requests_per_unit, unit)
    return request.domain, descriptors, request.hits_addend or 1, overrides


def response_of(decision: Decision) -> rls_pb2.RateLimitResponse:
    statuses = []
    for result in decision.results:
        rule = result.limit
        if rule is None:
            statuses.append(_Status(code=_OK, limit_remaining=result.remaining))
            continue
        statuses.append(
            _Status(
                code=_OVER if result.over_limit else _OK,
                current_limit=_Limit(
                    requests_per_unit=rule.requests_per_unit, unit=_UNIT_ENUM[rule.unit], name=rule.name
                ),
                limit_remaining=result.remaining,
                duration_until_reset=_Duration(seconds=result.reset),
            )
        )
    return _Response(
        overall_code=_OVER if decision.over_limit else _OK,
        statuses=statuses,
        response_headers_to_add=[_Header(key=name, value=value) for name, value in decision.headers],
    )


class BatchHandler:
    """The h2 server's handler: every call of one loop iteration at once, decided together
    (``Limiter.decide_batch``: one backend round trip), plus the gRPC health ``Check``."""

    def __init__(self, limiter: Limiter, watcher: ConfigWatcher, health: HealthState) -> None:
        self.limiter = limiter
        self.watcher = watcher
        self.health = health

    def __call__(self, calls: list[tuple[bytes, bytes]]) -> list[Answer]:
        out: list[Answer] = [_INTERNAL] * len(calls)
        batch: list[Call] = []
        where: list[int] = []
        for i, (path, message) in enumerate(calls):
            if path == _RLS_PATH:
                try:
                    batch.append(call_of(_Request.FromString(message)))
                except Exception:  # noqa: BLE001 - any undecodable message
                    out[i] = (13, "cannot decode the RateLimitRequest")
                    continue
                where.append(i)
            elif path == _HEALTH_CHECK:
                out[i] = health_answer(self.health, message)
            else:
                out[i] = (12, f"unknown method {path.decode(errors='replace')}")
        if batch:
            try:
                decisions = self.limiter.decide_batch(self.watcher.config, batch)
            except Exception:
                log.exception("rate-limit decision failed")
                return out
            for i, decision in zip(where, decisions, strict=True):
                out[i] = response_of(decision).SerializeToString()
        return out


class _Collector:
    def __init__(self, *parts: Any) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


class RateLimitServer:
    """The rate-limit service: gRPC on ``address``, ``/metrics`` on ``metrics_address``.

    ``reload_interval``: seconds between checks of the config directory (0: only ``reload()``).
    ``threads``: size of the gRPC thread pool (each in-flight call holds one thread; a Redis
    round trip releases the GIL, so a few threads keep one core busy).
    """

    def __init__(
        self,
        config_dir: Path,
        *,
        address: str = f"0.0.0.0:{DEFAULT_PORT}",
        backend: Backend | None = None,
        redis_url: str | None = None,
        redis_timeout: float = 0.05,
        algorithm: Algorithm = "fixed",
        failure_mode: Literal["open", "closed"] = "open",
        shadow_mode: bool = False,
        key_prefix: str = "",
        metrics_address: str = "",
        reload_interval: float = 1.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        threads: int = DEFAULT_THREADS,
        server: ServerKind = "auto",
    ) -> None:
        if threads < 1:
            raise ConfigError("must be at least 1", field="threads")
        if server not in ("auto", "h2", "grpcio"):
            raise ConfigError(f"{server!r}: expected auto, h2 or grpcio", field="server")
        if not config_dir.is_dir():
            raise ConfigError(f"{config_dir} is not a directory", field="config_dir")
        self.listen = parse_listen_address(address)
        self.watcher = ConfigWatcher(config_dir)
        self.watcher.check()
        if self.watcher.last_error is not None:
            raise ConfigError(self.watcher.last_error)
        self.backend = backend if backend is not None else make_backend(redis_url, timeout=redis_timeout)
        self.limiter = Limiter(
            self.backend,
            algorithm=algorithm,
            failure_mode=failure_mode,
            shadow_mode=shadow_mode,
            key_prefix=key_prefix,
            clock=clock,
        )
        self.registry = registry or CollectorRegistry()
        self.registry.register(_Collector(self.limiter.stats, self.watcher))
        self.reload_interval = reload_interval
        self.threads = threads
        self.health = HealthState([SERVICE_NAME], threaded=True)
        self._metrics = MetricsEndpoint(self.registry, metrics_address) if metrics_address else None
        self.server_kind: Literal["h2", "grpcio"] = "grpcio" if server == "grpcio" else _native(server)
        self._server: grpc.Server | None = None
        self._h2: H2Server | None = None
        self._watch: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.port = 0

    @property
    def address(self) -> str:
        return self.listen.with_port(self.port).target

    @property
    def metrics_port(self) -> int:
        return self._metrics.port if self._metrics is not None else 0

    def reload(self) -> bool:
        return self.watcher.check()

    async def start(self) -> None:
        """Start serving (returns at once: grpcio serves from its own threads)."""
        check_protobuf_backend()
        if self.server_kind == "h2":
            sock = listen_socket(self.listen, "envoykit ratelimit")
            self._h2 = H2Server(
                sock, BatchHandler(self.limiter, self.watcher, self.health), name="envoykit-rls-h2"
            )
            self.port = sock.getsockname()[1] if not self.listen.is_unix else 0
            self._h2.start()
        else:
            self._start_grpcio()
        if self._metrics is not None:
            self._metrics.start()
        if self.reload_interval > 0:
            self._watch = threading.Thread(target=self._watch_loop, name="envoykit-rls-reload", daemon=True)
            self._watch.start()
        await self.health.set_serving()
        log.info(
            "envoykit ratelimit serving on %s with the %s server (domains: %s)",
            self.address,
            self.server_kind,
            ", ".join(self.watcher.config),
        )

    def _start_grpcio(self) -> None:
        pool = futures.ThreadPoolExecutor(self.threads, thread_name_prefix="envoykit-rls")
        server = grpc.server(pool, options=[("grpc.so_reuseport", 0)])
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitServicer(self.limiter, self.watcher), server
        )
        self.health.add_to_server(server)
        port = server.add_insecure_port(self.listen.target)
        if port == 0 and not self.listen.is_unix:
            raise OSError(f"envoykit ratelimit cannot listen on {self.listen.target}")
        self.port = port
        server.start()
        self._server = server

    def _watch_loop(self) -> None:
        while not self._stopping.wait(self.reload_interval):
            try:
                self.watcher.check()
            except Exception:  # never let the watcher die
                log.exception("rate-limit config watcher failed")

    async def stop(self, grace: float | None = 2.0) -> None:
        self._stopping.set()
        if self._server is not None:
            await self.health.shutting_down()
            done = self._server.stop(grace)
            await asyncio.to_thread(done.wait, (grace or 0) + 10.0)
            self._server = None
        if self._h2 is not None:
            await self.health.shutting_down()
            await asyncio.to_thread(self._h2.stop, grace or 0.0)
            self._h2 = None
        if self._watch is not None:
            await asyncio.to_thread(self._watch.join, 5.0)
            self._watch = None
        if self._metrics is not None:
            self._metrics.stop()
        self.backend.close()
        self._stopped.set()

    async def wait(self) -> None:
        if self._server is not None or self._h2 is not None:
            await asyncio.to_thread(self._stopped.wait)


def _native(choice: str) -> Literal["h2", "grpcio"]:
    """``h2`` if the native server loads; ``auto`` falls back to grpcio with a warning."""
    try:
        load_extension()
    except H2BuildError as exc:
        if choice == "h2":
            raise
        log.warning("the native h2 server is unavailable, serving with grpcio: %s", exc)
        return "grpcio"
    return "h2"


def run_ratelimit(server: RateLimitServer) -> None:
    """Serve until SIGTERM/SIGINT (blocking; for the CLI)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        await stop.wait()
        await server.stop()

    tune_garbage_collector()
    with asyncio.Runner(loop_factory=new_event_loop_factory()) as runner:
        runner.run(main())
