"""One Envoy, two listeners: Envoy's native ``grpc_json_transcoder`` and envoykit's (the sidecar
running ``grpc-json-transcoder``), both in front of the same gRPC backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from envoykit import Chain
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.runtime import SidecarThread
from envoykit.testing import EnvoyFactory
from envoykit_filters.transcoder import GrpcJsonTranscoder

from .native import NATIVE, NATIVE_CLUSTER, grpc_cluster, native_listener


@contextmanager
def two_listeners(
    descriptor: Path,
    backend: int,
    options: dict[str, Any],
    envoy_factory: EnvoyFactory,
    server_model: str = "aio",
) -> Iterator[tuple[str, str]]:
    """Yields the base URLs ``(native, envoykit)``."""
    transcoder = GrpcJsonTranscoder(
        {"proto_descriptor": str(descriptor), "services": ["bookstore.Bookstore"], **options}
    )
    chain = Chain([transcoder], name="default")
    config = GatewayConfig.model_validate(
        {
            "listener": {"port": 0},
            "admin": {"port": 0},
            "sidecar": {"address": "127.0.0.1:0", "metrics_address": ""},
            "upstreams": {"bookstore": {"url": f"http://127.0.0.1:{backend}", "http2": True}},
            "chains": {"default": []},
            "default_chain": "default",
            "routes": [{"prefix": "/", "upstream": "bookstore"}],
        }
    )
    with ExitStack() as stack:
        sidecar = stack.enter_context(
            SidecarThread({"default": chain}, default_chain="default", server_model=server_model)  # type: ignore[arg-type]
        )
        bootstrap = render_bootstrap(
            Gateway(config, {"default": chain}, "<differential>"),
            sidecar=sidecar.address,
            listener_port=0,
            admin_port=0,
            access_log="",
        )
        resources = bootstrap["static_resources"]
        resources["listeners"].append(native_listener(descriptor, options))
        resources["clusters"].append(grpc_cluster(NATIVE_CLUSTER, backend))
        envoy = envoy_factory(bootstrap)
        ours = next(n for n in envoy.listener_ports if n != NATIVE)
        yield envoy.url("", NATIVE), envoy.url("", ours)
