"""Reference floor for the rate-limit bench: the plainest ``ShouldRateLimit`` servicer, no SDK.

It answers one prebuilt OK ``RateLimitResponse`` to every call, on ``grpc.server`` with a thread
pool (``--threads N``, default 8) or on ``grpc.aio`` (``--aio``, uvloop when installed). It shows
what grpcio itself costs per unary call on this machine, so the service's decisions/s can be read
as a fraction of the best any Python RLS on grpcio can do. ``--h2``: the same on the service's
native HTTP/2 server (``envoykit.runtime._h2``; a batch handler answering the prebuilt bytes),
the front end's own cost. Serves until SIGTERM, then prints
``calls N`` (how many calls it answered).

Usage: .venv/bin/python bench/rls_floor.py --port N [--threads 8 | --aio | --h2]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.runtime._server import tune_garbage_collector

_OK = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)


#: Calls answered (``itertools.count`` is atomic under the GIL); printed at exit.
CALLS = itertools.count()


class SyncFloor(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        next(CALLS)
        return _OK


class AioFloor(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        next(CALLS)
        return _OK


def serve_sync(port: int, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=[("grpc.so_reuseport", 0)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(SyncFloor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


def serve_h2(port: int) -> None:
    import socket

    from envoykit.runtime._h2 import H2Server

    answer = _OK.SerializeToString()

    def handler(calls: list[tuple[bytes, bytes]]) -> list[Any]:
        for _ in calls:
            next(CALLS)
        return [answer] * len(calls)

    server = H2Server(socket.create_server(("127.0.0.1", port), backlog=1024), handler)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


async def serve_aio(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(AioFloor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--aio", action="store_true")
    parser.add_argument("--h2", action="store_true", help="the native HTTP/2 server of --server h2")
    opts = parser.parse_args()
    tune_garbage_collector()  # as the service does: the floor gets the same GC settings
    if opts.h2:
        serve_h2(opts.port)
    elif opts.aio:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(serve_aio(opts.port))
    else:
        serve_sync(opts.port, opts.threads)
    print(f"calls {next(CALLS)}", flush=True)


if __name__ == "__main__":
    main()
