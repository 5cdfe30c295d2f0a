"""envoykit's ext_authz sidecar for the bench: a no-op authorization chain, or the ``jwt`` filter.

Serves ``envoy.service.auth.v3.Authorization`` with ``SidecarServer`` on the ``threads`` server
model (measured faster for unary checks: bench/extauthz_models.py, docs/extauthz.md), prints
``ready <address>`` once serving, then serves until SIGTERM.

- ``--chain noop``: one filter whose request-headers hook lets every request through (the
  smallest authorization chain: no response hook, nothing sent back but "allow").
- ``--chain jwt --jwks PATH``: envoykit's ``jwt`` filter with the provider block the native
  ``jwt_authn`` scenario uses (``bench/_jwt.py``), every path requiring a valid token.

- ``--protocol http``: the same chain behind envoykit's HTTP authorization server (Envoy's
  ``http_service``) on ``--address``; ``ready`` prints that address.

Usage: .venv/bin/python -m bench.envoykit_authz --address 127.0.0.1:0 --chain noop
       [--server threads|aio] [--threads 8] [--protocol grpc|http]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

if not __package__:  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envoykit import Chain, EmptyConfig, HttpFilter, NoState, Reply, Request


class AuthzNoOp(HttpFilter[EmptyConfig, NoState]):
    """Allows every request and changes nothing."""

    name = "authz-noop"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        return None


def build_chain(kind: str, jwks: str | None) -> Chain:
    if kind == "noop":
        return Chain([AuthzNoOp()], name="authz")
    from bench._jwt import PROVIDER, provider, rules
    from envoykit_filters import Jwt

    if not jwks:
        raise SystemExit("--chain jwt needs --jwks PATH")
    config = {"providers": {PROVIDER: provider(Path(jwks))}, "rules": rules()}
    return Chain([Jwt(config)], name="authz")


async def serve(address: str, chain: Chain, server_model: str, threads: int, protocol: str = "grpc") -> None:
    from envoykit.extauthz import HttpAuthzService, ext_authz_service, http_authz_service
    from envoykit.runtime import SidecarServer, tune_garbage_collector

    http = protocol == "http"
    server = SidecarServer(
        {"authz": chain},
        default_chain="authz",
        # HTTP mode: the checks go to the HTTP server on `address`; the gRPC server (health only)
        # listens on a port of its own, as in `envoykit serve`.
        address="127.0.0.1:0" if http else address,
        services=[http_authz_service(address) if http else ext_authz_service()],
        server_model="threads" if server_model == "threads" else "aio",
        threads=threads,
    )
    tune_garbage_collector()  # as `envoykit serve` does for its process
    await server.start()
    service = server.services[0]
    print(f"ready {service.address if isinstance(service, HttpAuthzService) else server.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:0", help="host:port (0 = OS-assigned) or unix:PATH")
    parser.add_argument("--chain", choices=["noop", "jwt"], default="noop")
    parser.add_argument("--jwks", help="JWKS file of the jwt chain's provider")
    parser.add_argument("--server", choices=["aio", "threads"], default="threads", help="server model")
    parser.add_argument("--threads", type=int, default=8, help="worker threads for --server threads")
    parser.add_argument(
        "--protocol",
        choices=["grpc", "http"],
        default="grpc",
        help="ext_authz over gRPC or HTTP (http_service)",
    )
    args = parser.parse_args()
    chain = build_chain(args.chain, args.jwks)
    from bench.envoykit_noop import _loop_factory  # uvloop when installed, as `envoykit serve`

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.address, chain, args.server, args.threads, args.protocol))


if __name__ == "__main__":
    main()
