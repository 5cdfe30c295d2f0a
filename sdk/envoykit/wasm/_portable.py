"""Build-time check: can this filter module run inside Envoy's Wasm VM?

Inside Envoy there is no event loop to await on, no sockets, no threads and no filesystem, and
only modules frozen into the build exist. A filter that needs any of that would build fine and
then fail on its first request; this check rejects it at ``envoykit build-wasm`` time instead,
with the file, the line and the reason, reading the source (nothing is imported or executed).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Problem", "check_portable", "UNAVAILABLE_IN_PROXY"]

#: Modules that exist in CPython but cannot work in Envoy's Wasm VM, and why.
UNAVAILABLE_IN_PROXY: dict[str, str] = {
    "socket": "there is no network access inside Envoy's Wasm VM",
    "ssl": "there is no network access inside Envoy's Wasm VM",
    "select": "there is no network access inside Envoy's Wasm VM",
    "selectors": "there is no network access inside Envoy's Wasm VM",
    "http": "there is no network access inside Envoy's Wasm VM",
    "urllib.request": "there is no network access inside Envoy's Wasm VM",
    "asyncio": "nothing can be awaited inside Envoy: hooks run synchronously",
    "threading": "there are no threads inside Envoy's Wasm VM",
    "_thread": "there are no threads inside Envoy's Wasm VM",
    "concurrent": "there are no threads or processes inside Envoy's Wasm VM",
    "multiprocessing": "there are no processes inside Envoy's Wasm VM",
    "subprocess": "there are no processes inside Envoy's Wasm VM",
    "signal": "there are no signals inside Envoy's Wasm VM",
    "ctypes": "native code cannot be loaded inside Envoy's Wasm VM",
    "sqlite3": "native extensions and files are not available inside Envoy's Wasm VM",
}
_ADVICE = "; run this filter in the sidecar placement instead"
_HOST_ONLY_SUBPACKAGES = {"runtime", "extproc", "testing", "cli", "gateway", "envoyconfig", "wasm"}
_ALWAYS_FROZEN = {"envoykit", "envoykit_filters", "pydantic"}  # pydantic = the in-proxy subset


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


def check_portable(path: Path, *, search_path: list[str] | None = None) -> list[Problem]:
    """Problems that keep the filter module at ``path`` from running in-proxy (empty: fine)."""
    source = path.read_text()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return [Problem(str(path), exc.lineno or 1, f"syntax error: {exc.msg}")]
    problems: list[Problem] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _is_filter_class(node):
            problems.extend(_async_hooks(path, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                problems.extend(_import_problem(path, node.lineno, alias.name, search_path))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            problems.extend(_import_problem(path, node.lineno, node.module, search_path))
    return sorted(problems, key=lambda p: p.line)


def _is_filter_class(node: ast.ClassDef) -> bool:
    for base in node.bases:
        target = base.value if isinstance(base, ast.Subscript) else base
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "HttpFilter":
            return True
    return False


def _async_hooks(path: Path, node: ast.ClassDef) -> list[Problem]:
    return [
        Problem(
            str(path),
            item.lineno,
            f"{node.name}.{item.name} is async: nothing can be awaited inside Envoy (make it a plain "
            f"def){_ADVICE}",
        )
        for item in node.body
        if isinstance(item, ast.AsyncFunctionDef) and item.name.startswith("on_")
    ]


def _import_problem(path: Path, line: int, module: str, search_path: list[str] | None) -> list[Problem]:
    for name in (module, module.split(".")[0]):
        if name in UNAVAILABLE_IN_PROXY:
            return [Problem(str(path), line, f"imports {module}: {UNAVAILABLE_IN_PROXY[name]}{_ADVICE}")]
    root = module.split(".")[0]
    parts = module.split(".")
    if root == "envoykit" and len(parts) > 1 and parts[1] in _HOST_ONLY_SUBPACKAGES:
        return [
            Problem(
                str(path),
                line,
                f"imports {module}: only the SDK core (`envoykit`) exists inside Envoy; "
                f"{'.'.join(parts[:2])} runs on the host",
            )
        ]
    if root in _ALWAYS_FROZEN or root in sys.stdlib_module_names:
        return []
    local = Path(path).parent / f"{root}.py"
    if local.exists() or (Path(path).parent / root / "__init__.py").exists():
        return []
    spec = _find(root, search_path)
    if spec is None or spec.origin is None:
        return [
            Problem(str(path), line, f"imports {module}, which is not installed, so it cannot be frozen in")
        ]
    native = _native_part(spec)
    if native is not None:
        return [
            Problem(
                str(path),
                line,
                f"imports {module}, a compiled extension ({native}): only pure-Python "
                f"modules can be frozen into the Wasm module{_ADVICE}",
            )
        ]
    return []


def _native_part(spec: importlib.machinery.ModuleSpec) -> str | None:
    """The first native-code file of a module or package, if it has any."""
    origin = Path(spec.origin or "")
    if origin.suffix not in (".py", ".pyc"):
        return origin.name
    for location in spec.submodule_search_locations or ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            found = next(Path(location).rglob(f"*{suffix}"), None)
            if found is not None:
                return found.name
    return None


def _find(name: str, search_path: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    if search_path is not None:
        return importlib.machinery.PathFinder.find_spec(name, search_path)
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
