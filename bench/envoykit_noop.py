"""envoykit's no-op ext_proc sidecar for the bench: one filter whose two header hooks continue.

The only bench module that touches envoykit's sidecar runtime, so a change in that API is a
change here alone. It serves with ``SidecarServer`` (what ``run_sidecar`` and the CLI use, on
uvloop when installed) instead of the blocking ``run_sidecar`` because the harness needs the
OS-assigned port: it prints ``ready <address>`` once serving, then serves until SIGTERM.

Exits with code 3 and one line saying what is missing when envoykit has no sidecar runtime yet.

Usage: .venv/bin/python -m bench.envoykit_noop --address 127.0.0.1:0 [--profile out.prof]
(or --address unix:/path.sock)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal
import sys
from typing import TYPE_CHECKING, Any

from envoykit import Chain, EmptyConfig, HookResult, HttpFilter, NoState, Request, Response

if TYPE_CHECKING:
    from envoykit.runtime import SidecarServer

EXIT_UNAVAILABLE = 3


class NoOp(HttpFilter[EmptyConfig, NoState]):
    """Asks Envoy for request and response headers and lets both through unchanged."""

    name = "noop"

    def on_request_headers(self, request: Request, state: NoState) -> HookResult:
        return None

    def on_response_headers(self, response: Response, state: NoState) -> HookResult:
        return None


def build_chain() -> Chain:
    return Chain([NoOp()], name="bench")


def _sidecar_server_class() -> type[SidecarServer]:
    """``envoykit.runtime.SidecarServer``, or exit 3 saying what is not there."""
    try:
        from envoykit.runtime import SidecarServer as server_cls
    except ImportError as exc:
        print(f"envoykit sidecar runtime not available ({exc})", flush=True)
        sys.exit(EXIT_UNAVAILABLE)
    return server_cls


async def serve(address: str, server_model: str = "aio", threads: int = 16) -> None:
    server_cls = _sidecar_server_class()
    try:
        server = server_cls(
            {"bench": build_chain()},
            default_chain="bench",
            address=address,
            server_model=server_model if server_model in ("threads", "h2") else "aio",
            threads=threads,
        )
    except ImportError as exc:  # e.g. the ext_proc servicer (envoykit.extproc) is not written yet
        print(f"envoykit sidecar runtime not available ({exc})", flush=True)
        sys.exit(EXIT_UNAVAILABLE)
    from envoykit.runtime import tune_garbage_collector

    tune_garbage_collector()  # as `envoykit serve` (run_sidecar) does for its process
    await server.start()
    print(f"ready {server.address}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--address", default="127.0.0.1:0", help="host:port (port 0 = OS-assigned) or unix:PATH"
    )
    parser.add_argument(
        "--server", choices=["aio", "threads", "h2"], default="aio", help="sidecar server model"
    )
    parser.add_argument("--threads", type=int, default=16, help="worker threads for --server threads")
    parser.add_argument(
        "--profile", metavar="PATH", help="write cProfile stats of the event loop here on exit"
    )
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()  # handlers run on the event-loop thread, so this sees the hot path
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(args.address, args.server, args.threads))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
