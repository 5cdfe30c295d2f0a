"""Build the C test filters into .wasm once per source version (zig's wasm32-wasi clang).

Builds are cached under pytest's cache directory by a hash of the sources, so only the first
run pays for compiling (and zig's one-off libc build, ~20 s); later runs reuse the files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FILTERS = Path(__file__).parent / "filters"


def _build(source: Path, out_dir: Path, zig_cache: Path) -> Path:
    digest = hashlib.sha256(source.read_bytes() + (FILTERS / "proxy_wasm.h").read_bytes()).hexdigest()[:16]
    target = out_dir / f"{source.stem}-{digest}.wasm"
    if target.exists():
        return target
    tmp = target.with_suffix(f".{os.getpid()}.tmp")  # xdist workers may build the same filter
    cmd = [sys.executable, "-m", "ziglang", "cc", "--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-s"]
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": str(zig_cache)}
    done = subprocess.run(
        [*cmd, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=240, env=env
    )
    if done.returncode != 0:
        pytest.fail(f"cannot build {source.name}:\n{done.stderr}", pytrace=False)
    tmp.replace(target)
    for stale in out_dir.glob(f"{source.stem}-*.wasm"):  # builds of older sources
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


@pytest.fixture(scope="session")
def wasm_filter(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``wasm_filter("deny")`` -> path of ``filters/deny.c`` built to a proxy-wasm module."""
    pytest.importorskip("ziglang")
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        out_dir, default_zig = cache.mkdir("envoykit-wasmhost-filters"), cache.mkdir("envoykit-zig-cache")
    else:
        out_dir = default_zig = tmp_path_factory.mktemp("wasmhost-filters")
    zig_cache = Path(os.environ.get("ZIG_GLOBAL_CACHE_DIR") or default_zig)
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = _build(FILTERS / f"{name}.c", out_dir, zig_cache)
        return built[name]

    return get
