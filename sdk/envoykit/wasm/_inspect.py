"""Read a Wasm module's imports and exports (no runtime needed).

Why: Envoy refuses a module whose imports it cannot satisfy ("import type mismatch" for WASI's
``path_link``/``path_symlink``) or that lacks the proxy-wasm ABI marker export, and it says so only
at load time. Checking the interface right after a build turns that into a build-time error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._sdk import WasmBuildError

_IMPORT_SECTION = 2
_EXPORT_SECTION = 7
#: WASI imports Envoy 1.40 declares with a different signature: a module importing them won't load.
ENVOY_UNLINKABLE = frozenset(
    {("wasi_snapshot_preview1", "path_link"), ("wasi_snapshot_preview1", "path_symlink")}
)
ABI_MARKER = "proxy_abi_version_0_2_1"


@dataclass(frozen=True)
class ModuleInterface:
    imports: tuple[tuple[str, str], ...]  # (module, name), functions and others alike
    exports: tuple[str, ...]


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _name(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _leb(data, pos)
    return data[pos : pos + size].decode(), pos + size


def _skip_import_desc(data: bytes, pos: int) -> int:
    kind = data[pos]
    pos += 1
    if kind == 0:  # func: type index
        return _leb(data, pos)[1]
    if kind == 1:  # table: reftype + limits
        pos += 1
    if kind == 3:  # global: valtype + mut
        return pos + 2
    flags = data[pos]  # table/memory limits
    pos = _leb(data, pos + 1)[1]
    return _leb(data, pos)[1] if flags & 1 else pos


def read_interface(path: Path) -> ModuleInterface:
    """Parse the import and export sections of a core Wasm module."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm" or data[4:8] != b"\1\0\0\0":
        raise WasmBuildError(f"{path}: not a core Wasm module (components are not loadable by Envoy)")
    imports: list[tuple[str, str]] = []
    exports: list[str] = []
    pos = 8
    while pos < len(data):
        section = data[pos]
        size, pos = _leb(data, pos + 1)
        end = pos + size
        if section in (_IMPORT_SECTION, _EXPORT_SECTION):
            count, p = _leb(data, pos)
            for _ in range(count):
                if section == _IMPORT_SECTION:
                    module, p = _name(data, p)
                    name, p = _name(data, p)
                    imports.append((module, name))
                    p = _skip_import_desc(data, p)
                else:
                    name, p = _name(data, p)
                    exports.append(name)
                    p = _leb(data, p + 1)[1]
        pos = end
    return ModuleInterface(tuple(imports), tuple(exports))


def check_envoy_loadable(path: Path) -> ModuleInterface:
    """Raise ``WasmBuildError`` if Envoy 1.40 would reject ``path`` for its interface."""
    iface = read_interface(path)
    bad = sorted(set(iface.imports) & ENVOY_UNLINKABLE)
    if bad:
        raise WasmBuildError(f"{path}: imports {bad}, which Envoy cannot link; stub them in the module")
    if ABI_MARKER not in iface.exports:
        raise WasmBuildError(
            f"{path}: no {ABI_MARKER} export: Envoy reports 'unknown Proxy-Wasm ABI version'"
        )
    foreign = sorted({m for m, _ in iface.imports} - {"env", "wasi_snapshot_preview1"})
    if foreign:
        raise WasmBuildError(f"{path}: imports from {foreign}, which Envoy does not provide")
    return iface
