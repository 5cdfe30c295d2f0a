"""envoykit's filter library: ready gateway features built on the envoykit SDK.

Filters here import only the public ``envoykit`` API, never a runtime, so each one runs in
every placement (sidecar, Wasm, component). They register short names under the
``envoykit.filters`` entry-point group (see ``pyproject.toml``) for gateway files.
"""

import importlib

from .basic import AddHeaders, DenyPaths, NoOp
from .cors import Cors
from .egress_allowlist import EgressAllowlist
from .ip_filter import IpFilter
from .local_ratelimit import LocalRateLimit
from .rules import Rules
from .security_headers import SecurityHeaders
from .waf_log import WafLog

__all__ = [
    "AddHeaders",
    "Cors",
    "DenyPaths",
    "EgressAllowlist",
    "GrpcJsonTranscoder",
    "IpFilter",
    "Jwt",
    "LocalRateLimit",
    "NoOp",
    "Opa",
    "Rules",
    "SecurityHeaders",
    "WafLog",
]

#: Sidecar-only filters (network I/O, native libraries): imported on first use, so that importing
#: this package inside Envoy's Wasm VM never pulls them (or their dependencies) in.
_SIDECAR_ONLY = {"Jwt": "jwt", "Opa": "opa", "GrpcJsonTranscoder": "transcoder"}


def __getattr__(name: str) -> object:
    module = _SIDECAR_ONLY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Not cached in globals(): the Wasm binder lists this module's classes, and these are not
    # for Wasm.
    return getattr(importlib.import_module(f".{module}", __name__), name)
