"""Reference floor: the plainest no-op ext_proc servicer in Python, with no SDK at all.

``grpc.aio`` on uvloop (or, with ``--sync``, ``grpc.server`` on 8 threads), xds-protos'
generated servicer, and one prebuilt "continue" response per message kind. It shows how much of
a sidecar's per-request cost is grpcio itself (the field notes put ~98% of it there), and so how
close any Python SDK, envoykit or the peer, can get. Runs in envoykit's venv; prints
``ready <address>`` once serving, then serves until SIGTERM.

Usage: .venv/bin/python -m bench.floor_noop --address 127.0.0.1:0 [--sync]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

#: "Continue unchanged" for each kind of ProcessingRequest, built once.
_CONTINUE = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


class FloorProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for message in request_iterator:
            yield _CONTINUE[message.WhichOneof("request")]


class SyncFloorProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def Process(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for message in request_iterator:
            yield _CONTINUE[message.WhichOneof("request")]


def _bound(address: str, port: int) -> str:
    return address if address.startswith("unix:") else f"{address.rsplit(':', 1)[0]}:{port}"


def serve_sync(address: str, threads: int = 8) -> None:
    """The thread-pool server (one Envoy stream holds one thread for its whole request)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_ExternalProcessorServicer_to_server(SyncFloorProcessor(), server)
    port = server.add_insecure_port(address)
    server.start()
    print(f"ready {_bound(address, port)}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5).wait()


async def serve(address: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(FloorProcessor(), server)
    port = server.add_insecure_port(address)
    await server.start()
    print(f"ready {_bound(address, port)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--address", default="127.0.0.1:0", help="host:port (port 0 = OS-assigned) or unix:PATH"
    )
    parser.add_argument("--sync", action="store_true", help="grpc.server on 8 threads instead of grpc.aio")
    args = parser.parse_args()
    if args.sync:
        serve_sync(args.address)
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.address))
    else:
        uvloop.run(serve(args.address))


if __name__ == "__main__":
    main()
