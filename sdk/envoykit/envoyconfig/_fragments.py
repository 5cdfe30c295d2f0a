"""Find and fill the Envoy YAML fragments kept in the repository's ``envoy/`` directory.

The fragments ship inside the wheel (as ``envoykit/_envoy``) and are read from the source tree
in an editable install, so editing ``envoy/fragments/*.yaml`` takes effect immediately.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["fragment", "fragments_dir"]

_WHOLE = re.compile(r"^\$\{([a-z_]+)\}$")
_INNER = re.compile(r"\$\{([a-z_]+)\}")


def fragments_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "_envoy" / "fragments", here.parents[3] / "envoy" / "fragments"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("envoykit's Envoy fragments are missing (envoy/fragments in the source tree)")


@functools.cache
def _load(name: str) -> Any:
    return yaml.safe_load((fragments_dir() / f"{name}.yaml").read_text())


def fragment(fragment_name: str, /, **values: Any) -> Any:
    """Fragment ``fragment_name`` with every ``${placeholder}`` replaced from ``values``."""
    return _fill(copy.deepcopy(_load(fragment_name)), values, fragment_name)


def _fill(node: Any, values: dict[str, Any], name: str) -> Any:
    if isinstance(node, dict):
        return {_fill(k, values, name): _fill(v, values, name) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values, name) for v in node]
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole:
            return _value(whole.group(1), values, name)
        return _INNER.sub(lambda m: str(_value(m.group(1), values, name)), node)
    return node


def _value(key: str, values: dict[str, Any], name: str) -> Any:
    if key not in values:
        raise KeyError(f"fragment {name}.yaml needs a value for ${{{key}}}")
    return values[key]
