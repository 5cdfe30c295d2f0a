"""``envoykit build-wasm``: a filter module (plus envoykit's SDK) into one proxy-wasm module.

What goes in: the SDK core (``envoykit``), the in-proxy runtime (``envoykit.inproxy``), the
library filters (``envoykit_filters``), envoykit's stdlib-only pydantic subset frozen under the
name ``pydantic`` (pydantic-core has no Wasm build), the user's module, and a generated two-line
entry that binds them to the C shim. Every filter class defined in the user's module or the
library can then be named in the Envoy plugin configuration.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import envoykit
import envoykit_filters

from ._build import BuildResult, build_module
from ._portable import Problem, check_portable
from ._sdk import WasmBuildError, fetch_python_sdk

__all__ = ["build_filter_wasm", "PortabilityError", "frozen_sources"]

_SDK = Path(envoykit.__file__).resolve().parent
_LIBRARY = Path(envoykit_filters.__file__).resolve().parent
#: Core modules, in-proxy runtime and library filters; no host-only subpackage (gRPC, YAML...).
_INPROXY_PACKAGES = ("inproxy",)


class PortabilityError(WasmBuildError):
    """The filter module uses something that cannot exist inside Envoy; ``problems`` says where."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"this filter cannot run inside Envoy (Wasm):\n{lines}")


def frozen_sources(user_module: Path | None = None) -> dict[str, Path]:
    """Module name → source file for everything envoykit freezes next to the user's module."""
    sources: dict[str, Path] = {
        "envoykit": _SDK / "__init__.py",
        "pydantic": _SDK / "inproxy" / "_pydantic_lite.py",
    }
    for path in sorted(_SDK.glob("_*.py")):
        sources[f"envoykit.{path.stem}"] = path
    for package in _INPROXY_PACKAGES:
        for path in sorted((_SDK / package).glob("*.py")):
            name = f"envoykit.{package}" if path.stem == "__init__" else f"envoykit.{package}.{path.stem}"
            sources[name] = path
    for path in sorted(_LIBRARY.glob("*.py")):
        sources["envoykit_filters" if path.stem == "__init__" else f"envoykit_filters.{path.stem}"] = path
    if user_module is not None:
        sources[user_module.stem] = user_module
    return sources


def build_filter_wasm(
    filter_module: Path,
    out: Path,
    *,
    force: bool = False,
    build: Callable[..., BuildResult] = build_module,
    progress: Callable[[str], None] = lambda step: None,
) -> BuildResult:
    """Check ``filter_module`` for what cannot run in-proxy, then build ``out``.

    Raises ``PortabilityError`` (file, line, reason for each problem) before any compiling.
    ``progress`` hears about each long step as it starts.
    """
    filter_module = Path(filter_module).resolve()
    if not filter_module.is_file():
        raise WasmBuildError(f"{filter_module}: no such filter module")
    progress("[1/3] checking that the filters can run inside Envoy...")
    problems = check_portable(filter_module)
    if problems:
        raise PortabilityError(problems)
    name = filter_module.stem
    if not name.isidentifier() or name in frozen_sources():
        raise WasmBuildError(f"{filter_module}: rename the file: {name!r} is not a free module name")
    # Every public library module, so each library filter can be named in the plugin config.
    library = [m for m in frozen_sources() if m.startswith("envoykit_filters.") and "._" not in m]
    modules = [*library, name]
    entry_source = (
        "import _envoykit_host\n"
        + "".join(f"import {module}\n" for module in modules)
        + "from envoykit.inproxy._wasm import bind\n"
        + f"globals().update(bind(_envoykit_host, {', '.join(modules)}))\n"
    )
    progress("[2/3] CPython for wasm32-wasi (downloaded and verified once per machine)...")
    sdk = fetch_python_sdk()
    progress("[3/3] freezing modules and linking (first build on a machine: ~30 s)...")
    with tempfile.TemporaryDirectory(prefix="envoykit-entry-") as tmp:
        entry = Path(tmp) / "envoykit_entry.py"
        entry.write_text(entry_source)
        return build(entry, Path(out), user_modules=frozen_sources(filter_module), force=force, sdk=sdk)
