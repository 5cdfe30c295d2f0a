"""envoykit's filter library: ready gateway features built on the envoykit SDK.

Filters here import only the public ``envoykit`` API, never a runtime, so each one runs in
every placement (sidecar, Wasm, component). They register short names under the
``envoykit.filters`` entry-point group (see ``pyproject.toml``) for gateway files.
"""

from .basic import AddHeaders, DenyPaths, NoOp
from .cors import Cors
from .local_ratelimit import LocalRateLimit
from .security_headers import SecurityHeaders
from .waf_log import WafLog

__all__ = ["AddHeaders", "Cors", "DenyPaths", "LocalRateLimit", "NoOp", "SecurityHeaders", "WafLog"]
