"""Freeze Python modules into C so the interpreter inside Envoy needs no filesystem.

Why: an Envoy Wasm VM has no preopened directories, so every module the embedded CPython imports
(at start-up: ``encodings``...; later: the filter's own code and its stdlib imports) must be in
the binary. CPython 3.11 looks modules up in ``PyImport_FrozenModules`` before its own frozen
table, so the shim points that at the table generated here.

Bytecode is produced by the *host* CPython (``marshal.dumps(compile(...))``). That is only valid
when host and wasm interpreters share the bytecode magic, which ``check_magic`` enforces.
"""

from __future__ import annotations

import importlib.util
import marshal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from modulefinder import ModuleFinder
from pathlib import Path

from ._sdk import WasmBuildError

#: Modules CPython 3.11 imports from files while starting up with ``site_import=0`` and frozen
#: modules on. Measured: ``python -I -S -X frozen_modules=on -c "import sys; print(sys.modules)"``
#: minus built-in and deep-frozen modules, plus what the embedded start-up needs (the codecs the
#: shim sets for the filesystem and stdio, and ``warnings`` machinery used by error paths).
STARTUP_MODULES: tuple[str, ...] = (
    "encodings",
    "encodings.aliases",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8",
)

#: The name the shim imports: the filter author's entry module is frozen under it.
ENTRY_MODULE = "envoykit_inproxy_main"


@dataclass(frozen=True, order=True)
class FrozenModule:
    """One module as it goes into the table: dotted name, marshalled code, package flag."""

    name: str
    code: bytes
    is_package: bool


def check_magic(wasm_magic: bytes) -> None:
    """Refuse to freeze if the host would write bytecode the wasm CPython cannot load."""
    host = importlib.util.MAGIC_NUMBER
    if host != wasm_magic:
        raise WasmBuildError(
            f"host Python {sys.version.split()[0]} writes bytecode magic {host!r}, the wasm CPython "
            f"expects {wasm_magic!r}: build with a CPython 3.11 host"
        )


def compile_module(name: str, source: bytes, filename: str, *, is_package: bool = False) -> FrozenModule:
    """Compile ``source`` with the host interpreter. ``filename`` is what tracebacks will show."""
    try:
        code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    except SyntaxError as exc:
        raise WasmBuildError(f"{filename}: {exc}") from exc
    return FrozenModule(name, marshal.dumps(code), is_package)


def stdlib_source(stdlib_dir: Path, name: str) -> tuple[Path, bool]:
    """Locate a stdlib module's source in the wasm stdlib tree: (path, is_package)."""
    base = stdlib_dir.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    raise WasmBuildError(f"stdlib module {name!r} not found under {stdlib_dir} (a C module, or missing)")


def stdlib_imports(
    stdlib_dir: Path, entry: Path, extra: Iterable[str] = (), more_sources: Iterable[Path] = ()
) -> list[str]:
    """Stdlib modules reachable from ``entry`` and ``more_sources`` (static, ``modulefinder``).

    Only modules with a ``.py`` source in the wasm stdlib are returned: C modules are either
    built into ``libpython3.11.a`` or unavailable, and a missing one fails at import in the VM.
    """
    finder = ModuleFinder(path=[str(stdlib_dir)])
    for source in (entry, *more_sources):
        finder.run_script(str(source))
    for name in extra:
        finder.import_hook(name)
    root = stdlib_dir.resolve()
    names = []
    for name, mod in finder.modules.items():
        file = getattr(mod, "__file__", None)
        if name != "__main__" and file and Path(file).resolve().is_relative_to(root):
            names.append(name)
    return sorted(names)


def collect_modules(
    stdlib_dir: Path, entry: Path, *, extra_stdlib: Iterable[str] = (), user: Mapping[str, Path] | None = None
) -> list[FrozenModule]:
    """Everything the module needs: start-up set, entry's stdlib closure, ``user`` modules, entry.

    Parent packages of every dotted name are added too (importing ``a.b`` imports ``a``).
    """
    user = dict(user or {})
    wanted = set(STARTUP_MODULES) | set(stdlib_imports(stdlib_dir, entry, extra_stdlib, user.values()))
    for name in list(wanted):
        parts = name.split(".")
        wanted.update(".".join(parts[:i]) for i in range(1, len(parts)))
    out: list[FrozenModule] = []
    for name in sorted(wanted - set(user) - {ENTRY_MODULE}):
        path, is_pkg = stdlib_source(stdlib_dir, name)
        rel = path.relative_to(stdlib_dir).as_posix()
        out.append(compile_module(name, path.read_bytes(), f"<stdlib>/{rel}", is_package=is_pkg))
    for name, path in sorted(user.items()):
        is_pkg = path.name == "__init__.py"
        out.append(compile_module(name, path.read_bytes(), f"<frozen {name}>", is_package=is_pkg))
    out.append(compile_module(ENTRY_MODULE, entry.read_bytes(), f"<frozen {entry.name}>"))
    return sorted(out)


def _c_bytes(data: bytes) -> str:
    rows = []
    for i in range(0, len(data), 24):
        rows.append("  " + ",".join(str(b) for b in data[i : i + 24]) + ",")
    return "\n".join(rows) if rows else "  0,"


def render_c(modules: Iterable[FrozenModule], table: str = "envoykit_frozen_modules") -> str:
    """The C source: one byte array per module and the ``struct _frozen`` table (sorted, no dates)."""
    mods = sorted(modules)
    names = [m.name for m in mods]
    if len(set(names)) != len(names):
        raise WasmBuildError(f"duplicate frozen module names: {names}")
    parts = ["/* Generated by envoykit.wasm: frozen Python modules. Do not edit. */",
             "#include <Python.h>", ""]  # fmt: skip
    for i, mod in enumerate(mods):
        parts.append(f"/* {mod.name} */")
        parts.append(f"static const unsigned char M{i}[] = {{\n{_c_bytes(mod.code)}\n}};")
    parts.append(f"\nconst struct _frozen {table}[] = {{")
    for i, mod in enumerate(mods):
        parts.append(f'  {{"{mod.name}", M{i}, (int)sizeof(M{i}), {int(mod.is_package)}, NULL}},')
    parts.append("  {NULL, NULL, 0, 0, NULL},\n};\n")
    return "\n".join(parts)
