"""The standard gRPC health service, driven by the server lifecycle.

Envoy (``health_checks`` with ``grpc_health_check``) and Kubernetes probes ask it whether to send
traffic. The status flips to NOT_SERVING the moment a graceful stop begins, before the server
stops accepting streams, so health checkers move new requests elsewhere while in-flight ones drain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # public, unstubbed

__all__ = ["HealthState", "HEALTH_SERVICE_NAME"]

HEALTH_SERVICE_NAME = "grpc.health.v1.Health"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """Health of one server: ``""`` (the whole server) plus each named gRPC service."""

    def __init__(self, services: Iterable[str], *, threaded: bool = False) -> None:
        self.services = ("", *services)
        #: grpc.aio servers need the aio servicer; thread-pool servers the classic one.
        self.threaded = threaded
        self.servicer: Any = health.HealthServicer() if threaded else health_aio.HealthServicer()
        self.serving = False

    def add_to_server(self, server: grpc.aio.Server | grpc.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def _set(self, name: str, status: int) -> None:
        if self.threaded:
            self.servicer.set(name, status)
        else:
            await self.servicer.set(name, status)

    async def set_serving(self) -> None:
        for name in self.services:
            await self._set(name, _SERVING)
        self.serving = True

    async def set_not_serving(self) -> None:
        """NOT_SERVING until ``set_serving`` (used while the server is starting)."""
        for name in self.services:
            await self._set(name, _NOT_SERVING)
        self.serving = False

    async def shutting_down(self) -> None:
        """Permanently NOT_SERVING: later ``set`` calls are ignored by the servicer."""
        self.serving = False
        if self.threaded:
            self.servicer.enter_graceful_shutdown()
        else:
            await self.servicer.enter_graceful_shutdown()
