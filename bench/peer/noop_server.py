"""No-op ext_proc processor on the PyPI peer ``envoy-extproc-sdk`` 0.1.1, for the bench.

Runs in ``bench/.venv-peer`` (see ``setup_peer.sh``), never in envoykit's venv. The hooks match
envoykit's no-op chain: request headers and response headers, each returns "continue".

Two deviations from the peer's own ``serve()``, both so the comparison is fair and local:
- the server binds the address given on the command line (the peer's ``create_server`` always
  binds ``[::]:port``), and may bind a Unix socket; the servicers are the peer's own;
- ``REVEAL_EXTPROC_CHAIN`` is off, so the peer does not add its ``x-ext-procs-applied`` response
  header (a mutation envoykit's no-op does not make); ddtrace is off (``DD_TRACE_ENABLED=false``),
  as the peer's users run it without an agent. Both are set before the peer is imported because
  the peer reads them at import time.

Prints ``ready <address>`` (with the OS-assigned port) once serving, then serves until SIGTERM.

Usage: bench/.venv-peer/bin/python bench/peer/noop_server.py --address 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("DD_TRACE_ENABLED", "false")
os.environ.setdefault("REVEAL_EXTPROC_CHAIN", "false")
# The alias package ``grpc_health_check`` lives beside this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from envoy_extproc_sdk import BaseExtProcService  # type: ignore[import-not-found]
from envoy_extproc_sdk.health import HealthService, add_HealthServicer_to_server  # type: ignore[import-not-found]
from envoy_extproc_sdk.util.envoy import add_ExternalProcessorServicer_to_server  # type: ignore[import-not-found]


class NoopExtProcService(BaseExtProcService):  # type: ignore[misc]
    """Request- and response-header hooks that let everything through unchanged."""

    async def process_request_headers(self, headers: Any, context: Any, request: Any, response: Any) -> Any:
        return response

    async def process_response_headers(self, headers: Any, context: Any, request: Any, response: Any) -> Any:
        return response


def _bound_address(address: str, port: int) -> str:
    if address.startswith("unix:"):
        return address
    host = address.rsplit(":", 1)[0]
    return f"{host}:{port}"


async def serve(address: str) -> None:
    server = grpc.aio.server()
    add_ExternalProcessorServicer_to_server(NoopExtProcService(name="noop"), server)
    add_HealthServicer_to_server(HealthService(), server)
    port = server.add_insecure_port(address)
    await server.start()
    print(f"ready {_bound_address(address, port)}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", default="127.0.0.1:0", help="host:port (port 0 = OS-assigned) or unix:PATH"
    )
    args = parser.parse_args()
    asyncio.run(serve(args.address))


if __name__ == "__main__":
    main()
