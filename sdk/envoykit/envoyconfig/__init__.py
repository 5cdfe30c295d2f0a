"""Render Envoy bootstraps for envoykit gateways (fragments live in the repo's ``envoy/``)."""

from ._fragments import fragment, fragments_dir
from ._render import (
    LISTENER_NAME,
    SIDECAR_CLUSTER,
    chain_specs,
    ensure_in_proxy_module,
    render_bootstrap,
    sidecar_address,
    wasm_filter,
)

__all__ = [
    "LISTENER_NAME",
    "SIDECAR_CLUSTER",
    "chain_specs",
    "ext_authz_filter",
    "ensure_in_proxy_module",
    "fragment",
    "fragments_dir",
    "render_bootstrap",
    "sidecar_address",
    "wasm_filter",
]
