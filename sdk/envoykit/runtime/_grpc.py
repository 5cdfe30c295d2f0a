"""Registering a servicer's method handlers on either of grpcio's server kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

__all__ = ["add_method_handlers"]


def add_method_handlers(
    server: grpc.aio.Server | grpc.Server,
    service: str,
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
) -> None:
    """Register ``handlers`` (method name -> handler) of ``service`` on ``server``.

    grpcio >= 1.63 also takes them as registered handlers, which it dispatches without scanning
    the generic handlers on every call; older versions keep the generic path.
    """
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, dict(handlers)),))
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:
        register(service, dict(handlers))
