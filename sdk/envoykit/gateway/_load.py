"""Load a gateway file: YAML -> validated ``GatewayConfig`` -> ready ``Chain`` objects.

All validation happens here, before anything listens: a bad field in the gateway file or in
any filter's config raises one ``ConfigError`` naming the file, the line, the field and the
reason (and every other problem found in the same pass).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._chain import Chain
from .._config import format_loc, validate_config
from .._errors import ConfigError, EnvoykitError
from .._filter import HttpFilter
from ._model import GatewayConfig
from ._yaml_lines import line_finder

__all__ = ["Gateway", "load_gateway", "parse_gateway", "resolve_filter", "FILTER_ENTRY_POINTS"]

#: Entry-point group where filter packages register short names (``add-headers = pkg:Class``).
FILTER_ENTRY_POINTS = "envoykit.filters"


@dataclass(frozen=True)
class Gateway:
    """A loaded gateway: its validated config and the chains built from it."""

    config: GatewayConfig
    chains: Mapping[str, Chain]
    source: str
    #: Where relative paths in the file (filter modules, the Wasm module) are resolved.
    base_dir: Path = Path(".")

    def path(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()


def load_gateway(path: str | Path) -> Gateway:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(file)) from None
    return parse_gateway(text, source=str(file), base_dir=file.resolve().parent)


def parse_gateway(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Gateway:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {reason}", file=source, line=line) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", file=source)
    line_of = line_finder(text)
    config = validate_config(GatewayConfig, data, file=source, line_of=line_of)
    refs = [
        ConfigError(reason, file=source, field=format_loc(loc), line=line_of(loc))
        for loc, reason in config.reference_errors()
    ]
    if refs:
        raise ConfigError.collect(refs)
    base = base_dir or Path.cwd()
    chains = build_chains(config, source=source, base_dir=base, line_of=line_of)
    return Gateway(config, chains, source, base)


def build_chains(
    config: GatewayConfig,
    *,
    source: str,
    base_dir: Path,
    line_of: Callable[[tuple[int | str, ...]], int | None] = lambda loc: None,
) -> dict[str, Chain]:
    errors: list[ConfigError] = []
    chains: dict[str, Chain] = {}
    for chain_name, specs in config.chains.items():
        filters: list[HttpFilter[Any, Any]] = []
        for i, spec in enumerate(specs):
            where = ("chains", chain_name, i)
            try:
                cls = resolve_filter(spec.filter, base_dir)
            except EnvoykitError as exc:
                errors.append(
                    ConfigError(
                        str(exc),
                        file=source,
                        field=format_loc((*where, "filter")),
                        line=line_of((*where, "filter")),
                    )
                )
                continue
            try:
                cfg = validate_config(
                    cls.Config, spec.config, file=source, prefix=(*where, "config"), line_of=line_of
                )
                filters.append(
                    cls(
                        cfg,
                        name=spec.name,
                        failure_mode=spec.failure_mode,
                        metadata_namespace=spec.metadata_namespace,
                    )
                )
            except ConfigError as exc:
                errors.append(exc)
            except Exception as exc:  # noqa: BLE001 - a filter __init__ may reject a valid-looking config
                errors.append(
                    ConfigError(
                        f"{type(exc).__name__}: {exc}",
                        file=source,
                        field=format_loc((*where, "config")),
                        line=line_of(where),
                    )
                )
        try:
            chains[chain_name] = Chain(filters, name=chain_name)
        except EnvoykitError as exc:
            errors.append(
                ConfigError(
                    str(exc), file=source, field=f"chains.{chain_name}", line=line_of(("chains", chain_name))
                )
            )
    if errors:
        raise ConfigError.collect(errors)
    return chains


def resolve_filter(ref: str, base_dir: Path | None = None) -> type[HttpFilter[Any, Any]]:
    """``add-headers`` (entry point), ``package.module:Class`` or ``path/file.py:Class``."""
    if ":" not in ref:
        eps = importlib.metadata.entry_points(group=FILTER_ENTRY_POINTS)
        for ep in eps:
            if ep.name == ref:
                obj = ep.load()
                break
        else:
            known = ", ".join(sorted(ep.name for ep in eps)) or "none installed"
            raise ConfigError(f"unknown filter {ref!r} (registered filters: {known}; or use module:Class)")
    else:
        module_ref, _, attr = ref.rpartition(":")
        module = _import(module_ref, base_dir)
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"{module_ref} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, HttpFilter)):
        raise ConfigError(f"{ref} is not an envoykit HttpFilter subclass")
    return obj


def _import(module_ref: str, base_dir: Path | None) -> Any:
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"filter file {path} does not exist")
        name = f"envoykit_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - report any import-time failure as config error
            raise ConfigError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
        return module
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        return importlib.import_module(module_ref)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_ref}: {exc}") from None
