"""Reference floor: the plainest ext_authz ``Check`` servicer in Python, with no SDK at all.

``grpc.server`` on 8 threads (the model envoykit's ext_authz sidecar uses), a generic handler
that skips deserialising the request and answers one prebuilt "allow" ``CheckResponse``. Through
Envoy it shows what gRPC ext_authz with *any* Python server costs against Envoy's HTTP
ext_authz ceiling. Prints ``ready <address>`` once serving, then serves until SIGTERM.

Usage: .venv/bin/python -m bench.floor_authz --address 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2

_ALLOW = external_auth_pb2.CheckResponse(status={"code": 0}, ok_response={}).SerializeToString()


def _check(request: bytes, context: Any) -> bytes:
    return _ALLOW


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0", help="host:port (port 0 = OS-assigned)")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.threads))
    handler = grpc.unary_unary_rpc_method_handler(_check)  # bytes in, bytes out
    service = "envoy.service.auth.v3.Authorization"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Check": handler}),))
    port = server.add_insecure_port(args.address)
    server.start()
    print(f"ready {args.address.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(0.5).wait()


if __name__ == "__main__":
    main()
