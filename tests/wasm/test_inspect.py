"""Reading a module's interface: hand-assembled modules, no toolchain needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit.wasm import WasmBuildError, check_envoy_loadable, read_interface


def _vec(items: list[bytes]) -> bytes:
    return bytes([len(items)]) + b"".join(items)


def _name(text: str) -> bytes:
    return bytes([len(text)]) + text.encode()


def _section(sid: int, body: bytes) -> bytes:
    return bytes([sid, len(body)]) + body


def module(imports: list[tuple[str, str]], exports: list[str]) -> bytes:
    """A module importing functions of type () -> () and exporting function 0 under each name."""
    types = _section(1, _vec([b"\x60\x00\x00"]))
    memory_import = _name("env") + _name("memory") + b"\x02\x00\x01"  # memory, min 1: kind 2 is skipped right
    imps = _section(2, _vec([memory_import] + [_name(m) + _name(n) + b"\x00\x00" for m, n in imports]))
    exps = _section(7, _vec([_name(e) + b"\x00\x00" for e in exports]))
    return b"\0asm\1\0\0\0" + types + imps + exps


def test_reads_imports_and_exports(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(module([("env", "proxy_log")], ["proxy_abi_version_0_2_1", "proxy_on_vm_start"]))
    iface = check_envoy_loadable(path)
    assert iface.imports == (("env", "memory"), ("env", "proxy_log"))
    assert iface.exports == ("proxy_abi_version_0_2_1", "proxy_on_vm_start")


@pytest.mark.parametrize(
    ("imports", "exports", "message"),
    [
        ([("wasi_snapshot_preview1", "path_link")], ["proxy_abi_version_0_2_1"], "cannot link"),
        ([], ["proxy_on_vm_start"], "ABI version"),
        ([("wasi:io/streams", "read")], ["proxy_abi_version_0_2_1"], "does not provide"),
    ],
)
def test_rejects_what_envoy_rejects(
    tmp_path: Path, imports: list[tuple[str, str]], exports: list[str], message: str
) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(module(imports, exports))
    with pytest.raises(WasmBuildError, match=message):
        check_envoy_loadable(path)


def test_components_are_not_modules(tmp_path: Path) -> None:
    path = tmp_path / "c.wasm"
    path.write_bytes(b"\0asm\x0d\0\x01\0")
    with pytest.raises(WasmBuildError, match="not a core Wasm module"):
        read_interface(path)
