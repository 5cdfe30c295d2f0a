"""A running gateway for end-to-end tests: a real Envoy, the envoykit sidecar and an echo upstream.

``start_gateway(chain)`` renders the same Envoy bootstrap ``envoykit envoy-config`` would for a
one-upstream gateway file, with every port chosen by the OS, and returns once Envoy is ready.
Filter authors get the whole production path (Envoy's ext_proc filter, gRPC, the sidecar) in a
test, with the filter classes defined right in the test module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import httpx

from .._chain import Chain
from .._filter import HttpFilter
from ..envoyconfig import render_bootstrap
from ..gateway import Gateway, GatewayConfig
from ..runtime import SidecarThread
from ._envoy import EnvoyFactory, EnvoyProcess
from ._upstream import EchoUpstream

__all__ = ["LiveGateway", "start_gateway", "ChainsInput"]

ChainsInput = Chain | HttpFilter[Any, Any] | Sequence[HttpFilter[Any, Any]] | Mapping[str, Chain]


def _as_chains(chains: ChainsInput) -> dict[str, Chain]:
    if isinstance(chains, Chain):
        return {chains.name: chains}
    if isinstance(chains, HttpFilter):
        return {"default": Chain([chains])}
    if isinstance(chains, Mapping):
        return dict(chains)
    return {"default": Chain(list(chains))}


class LiveGateway:
    """Envoy in front of ``upstream`` with ``sidecar`` running the chains. Stop with ``close()``."""

    def __init__(
        self, envoy: EnvoyProcess, sidecar: SidecarThread | None, upstream: EchoUpstream, gateway: Gateway
    ) -> None:
        self.envoy = envoy
        self.sidecar = sidecar
        self.upstream = upstream
        self.gateway = gateway
        self._stack = ExitStack()
        self.http = httpx.Client(timeout=10.0)

    def url(self, path: str = "/") -> str:
        return self.envoy.url(path)

    def request(self, method: str, path: str = "/", **kwargs: Any) -> httpx.Response:
        """Send a request through Envoy (httpx keyword arguments)."""
        return self.http.request(method, self.url(path), **kwargs)

    def get(self, path: str = "/", **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def stop_sidecar(self) -> None:
        """Take the sidecar down (to test Envoy's ``failure_mode_allow``)."""
        if self.sidecar is not None:
            self.sidecar.stop()

    def close(self) -> None:
        self.http.close()
        self._stack.close()

    def __enter__(self) -> LiveGateway:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_gateway(
    chains: ChainsInput,
    *,
    upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
    routes: Sequence[Mapping[str, Any]] | None = None,
    default_chain: str | None = "default",
    failure_mode_allow: bool = False,
    message_timeout_ms: int = 5000,
    transport: str = "tcp",
    chain_header: str | None = None,
    request_attributes: Sequence[str] | None = None,
    access_log: bool = True,
    server_model: str | None = None,
    authz: Mapping[str, Any] | None = None,
) -> LiveGateway:
    """Start the sidecar for ``chains`` and an Envoy routing to ``upstream`` through it.

    ``routes`` are gateway-file routes (``{"prefix": "/api", "chain": "api"}``; the upstream
    defaults to the echo upstream). ``transport="unix"`` serves the sidecar on a Unix socket that
    Envoy reaches through a ``pipe`` address. ``server_model`` is ``"aio"``, ``"threads"`` or ``"h2"``
    (default: the gateway's choice). ``authz`` is a gateway-file ``authz`` section
    (``{"chain": "authz", ...}``): that chain then runs in Envoy's ext_authz filter.
    """
    built = _as_chains(chains)
    sidecar_spec: dict[str, Any] = {
        "address": "127.0.0.1:0",
        "failure_mode_allow": failure_mode_allow,
        "message_timeout_ms": message_timeout_ms,
        "metrics_address": "",
        "chain_header": chain_header,
    }
    if request_attributes is not None:
        sidecar_spec["request_attributes"] = list(request_attributes)
    if server_model is not None:
        sidecar_spec["server"] = server_model
    config = GatewayConfig.model_validate(
        {
            "listener": {"port": 0},
            "admin": {"port": 0},
            "sidecar": sidecar_spec,
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{upstream.port}"}},
            "chains": {name: [] for name in built},
            "default_chain": default_chain if default_chain in built else None,
            "routes": [{"upstream": "echo", **r} for r in routes]
            if routes
            else [{"prefix": "/", "upstream": "echo"}],
            **({"authz": dict(authz)} if authz is not None else {}),
        }
    )
    gateway = Gateway(config, built, source="<test gateway>")
    stack = ExitStack()
    try:
        address = "127.0.0.1:0"
        if transport == "unix":
            # Short path: unix socket paths are limited to ~107 bytes, pytest tmp paths can be longer.
            sock_dir = tempfile.mkdtemp(prefix="ek-")
            stack.callback(shutil.rmtree, sock_dir, True)
            address = f"unix:{sock_dir}/sidecar.sock"
        from ..extauthz import gateway_services

        services, model = gateway_services(gateway, authz_http_address="127.0.0.1:0")
        sidecar = stack.enter_context(
            SidecarThread(
                built,
                default_chain=config.effective_default_chain,
                address=address,
                chain_header=chain_header,
                server_model=model,
                services=services,
            )
        )
        bootstrap = render_bootstrap(
            gateway,
            sidecar=sidecar.address,
            authz_http=_authz_http_address(sidecar),
            listener_port=0,
            admin_port=0,
            access_log=str(envoy_factory.root / f"access-{len(envoy_factory.started) + 1}.log")
            if access_log
            else "",
        )
        envoy = envoy_factory(bootstrap)
        live = LiveGateway(envoy, sidecar, upstream, gateway)
        live._stack = stack
        return live
    except BaseException:
        stack.close()
        raise


def _authz_http_address(sidecar: SidecarThread) -> str | None:
    """The bound address of the sidecar's HTTP ext_authz server, if it runs one."""
    from ..extauthz import HttpAuthzService

    for service in sidecar.server.services:
        if isinstance(service, HttpAuthzService):
            return service.address
    return None
