"""``envoykit demo``: a real Envoy with envoykit filters in front of a sample upstream.

Everything runs on loopback: the echo upstream and the sidecar bind free ports, Envoy listens on
the requested port. The access log is tailed to the terminal so each curl shows what the
filters did. ``--smoke`` sends the example requests itself and exits (used by the tests, and a
quick "does it work here" check).
"""

from __future__ import annotations

import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx

from .._errors import EnvoykitError
from ..envoyconfig import ensure_in_proxy_module, render_bootstrap
from ..gateway import Gateway
from ..runtime import SidecarThread
from ..testing import EchoUpstream, EnvoyProcess

__all__ = ["run_demo", "EXAMPLES"]


@dataclass(frozen=True)
class Example:
    what: str
    method: str
    path: str
    expect_status: int
    headers: tuple[tuple[str, str], ...] = ()

    def curl(self, base: str) -> str:
        flags = "".join(f" -H '{k}: {v}'" for k, v in self.headers)
        method = "" if self.method == "GET" else f" -X {self.method}"
        return f"curl -i{method}{flags} {base}{self.path}"


#: The requests the built-in demo gateway answers (see envoykit/demo/gateway.yaml).
EXAMPLES = (
    Example(
        "default chain: the upstream echoes x-envoykit-demo, you get x-envoykit: demo", "GET", "/hello", 200
    ),
    Example("deny-paths answers locally, the upstream never sees it", "GET", "/admin", 403),
    Example("/api runs the 'api' chain (route-selected): x-envoykit: api", "GET", "/api/books", 200),
    Example("/static has no chain: Envoy skips the sidecar entirely", "GET", "/static/app.js", 200),
)


#: The requests the Wasm demo gateway answers (see envoykit/demo/gateway-wasm.yaml).
WASM_EXAMPLES = (
    Example(
        "a Python filter running inside Envoy (Wasm): x-envoykit-wasm on request and response",
        "GET",
        "/hello",
        200,
    ),
    Example("deny-paths, also inside Envoy: the 403 never leaves the Envoy process", "GET", "/admin", 403),
    Example(
        "/api also runs the 'api' chain in the sidecar: both placements on one request",
        "GET",
        "/api/books",
        200,
    ),
)


def _examples(gateway: Gateway) -> tuple[Example, ...] | None:
    name = Path(gateway.source).name
    if Path(gateway.source).resolve().parent != Path(__file__).resolve().parents[1] / "demo":
        return None
    return WASM_EXAMPLES if name == "gateway-wasm.yaml" else EXAMPLES


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_demo(gateway: Gateway, *, port: int, smoke: bool = False) -> int:
    """Run until Ctrl-C (or, with ``smoke``, until the examples were checked). Exit status."""
    if port and not _port_free(port):
        print(
            f"error: port {port} is in use; pick another with --port or ENVOYKIT_DEMO_PORT", file=sys.stderr
        )
        return 1
    config = gateway.config
    from ..extauthz import gateway_services  # ext_authz too, when the gateway has an authz chain

    services, server_model = gateway_services(gateway)
    with (
        tempfile.TemporaryDirectory(prefix="envoykit-demo-") as tmp,
        EchoUpstream() as upstream,
        SidecarThread(
            chains=gateway.chains,
            default_chain=config.effective_default_chain,
            address="127.0.0.1:0",
            chain_header=config.sidecar.chain_header,
            metrics_address="",
            services=services,
            server_model=server_model,
        ) as sidecar,
    ):
        workdir = Path(tmp)
        access_log = workdir / "access.log"
        if config.in_proxy is not None:
            print(
                "building the in-proxy Wasm module (first time on a machine: about a minute)...", flush=True
            )
            try:
                ensure_in_proxy_module(gateway)
            except EnvoykitError as exc:
                print(f"error: cannot build the Wasm module: {exc}", file=sys.stderr)
                return 1
        bootstrap = render_bootstrap(
            gateway,
            sidecar=sidecar.address,
            listener_port=port,
            admin_port=0,
            upstreams={name: f"http://127.0.0.1:{upstream.port}" for name in config.upstreams},
            access_log=str(access_log),
        )
        try:
            envoy = EnvoyProcess(bootstrap, workdir=workdir).start()
        except EnvoykitError as exc:
            print(f"error: Envoy did not start: {exc}", file=sys.stderr)
            return 1
        try:
            base = f"http://127.0.0.1:{envoy.listener_port()}"
            if smoke:
                return _smoke(base, gateway)
            return _interactive(base, gateway, access_log)
        finally:
            envoy.stop()


def _banner(base: str, gateway: Gateway) -> str:
    lines = [
        f"envoykit demo: Envoy on {base} with envoykit filters, an echo upstream behind it.",
        f"gateway file: {gateway.source}",
        "",
    ]
    examples = _examples(gateway)
    if examples:
        for ex in examples:
            lines += [f"  # {ex.what}", f"  {ex.curl(base)}", ""]
    else:
        lines += [f"  curl -i {base}/", ""]
    lines.append("Access log below (one JSON line per request). Ctrl-C stops everything.")
    return "\n".join(lines)


def _smoke(base: str, gateway: Gateway) -> int:
    examples = _examples(gateway) or (Example("root", "GET", "/", 200),)
    failures = 0
    with httpx.Client(timeout=10.0) as client:
        for ex in examples:
            response = client.request(ex.method, base + ex.path, headers=dict(ex.headers))
            ok = response.status_code == ex.expect_status
            failures += not ok
            marks = {k: v for k, v in sorted(response.headers.items()) if k.startswith("x-envoykit")}
            print(f"{'ok  ' if ok else 'FAIL'} {ex.method} {ex.path} -> {response.status_code} {marks}")
    return 1 if failures else 0


def _interactive(base: str, gateway: Gateway, access_log: Path) -> int:
    print(_banner(base, gateway), flush=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tail = threading.Thread(target=_tail, args=(access_log, stop), daemon=True)
    tail.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous)
        print("\nstopping Envoy, the sidecar and the upstream...", flush=True)
    return 0


def _tail(path: Path, stop: threading.Event) -> None:
    position = 0
    while not stop.wait(0.2):
        try:
            with path.open("rb") as fh:
                fh.seek(position)
                chunk = fh.read()
        except FileNotFoundError:
            continue
        if chunk:
            position += len(chunk)
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
