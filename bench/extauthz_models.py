"""ext_authz server models, measured with a direct gRPC client (no Envoy): aio vs threads.

    .venv/bin/python bench/extauthz_models.py [--requests 20000] [--inflight 16]

The sidecar runs a one-filter chain (``noop``) in a child process pinned to the last CPU; the
client (grpcio, ``inflight`` concurrent unary calls) runs here, pinned to CPU 0. Prints checks/s
and the sidecar's CPU per check for each model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

SERVER = """
import sys
from envoykit import Chain
from envoykit.extauthz import ext_authz_service
from envoykit.runtime import run_sidecar
from envoykit_filters import NoOp
run_sidecar({"authz": Chain([NoOp()], name="authz")}, address=sys.argv[1],
            services=[ext_authz_service()], server_model=sys.argv[2], threads=8)
"""


def _client(address: str, requests: int, inflight: int) -> float:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.extauthz.support import check_request

    request = check_request(headers={"user-agent": "bench", "accept": "*/*"})
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )
        for _ in range(500):
            stub(request)
        slots = threading.Semaphore(inflight)
        done = threading.Event()
        left = [requests]
        lock = threading.Lock()

        def finished(_: object) -> None:
            slots.release()
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        started = time.perf_counter()
        for _ in range(requests):
            slots.acquire()
            stub.future(request).add_done_callback(finished)
        done.wait()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--inflight", type=int, default=16)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    for model in ("aio", "threads", "h2"):
        port = 50000 + os.getpid() % 5000
        address = f"127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-c", SERVER, address, model])
        os.sched_setaffinity(server.pid, {cpus[-1]})
        try:
            before = _cpu(server.pid)
            seconds = _client(address, args.requests, args.inflight)
            used = _cpu(server.pid) - before
        finally:
            server.terminate()
            server.wait(10)
        print(
            f"{model:8s} {args.requests / seconds:8.0f} checks/s  "
            f"sidecar CPU {used / args.requests * 1e6:5.0f} µs/check"
        )


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
