"""Filter configuration: a typed, frozen pydantic model validated once, at load.

Validating at load (not per request) means a typo in a gateway config stops the sidecar from
starting, or Envoy from accepting a Wasm plugin, with the field and the reason, instead of
surfacing as a 500 under traffic. Filters may precompute from their config in ``__init__``
so each request only does lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError

__all__ = ["FilterConfig", "EmptyConfig", "validate_config", "format_loc"]

C = TypeVar("C", bound=BaseModel)


class FilterConfig(BaseModel):
    """Base class for filter configs: immutable, and unknown fields are errors (typos fail)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EmptyConfig(FilterConfig):
    """The config of a filter that takes none."""


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("routes", 0, "prefix")`` -> ``"routes[0].prefix"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validate_config(
    model: type[C],
    data: Mapping[str, Any] | C | None,
    *,
    file: str | None = None,
    prefix: tuple[int | str, ...] = (),
    line_of: Callable[[tuple[int | str, ...]], int | None] | None = None,
) -> C:
    """Validate ``data`` against ``model``; raise ``ConfigError`` naming every bad field.

    ``prefix`` places the model inside a larger document (``("chains", "api", 0, "config")``), and
    ``line_of`` maps a full location to a line number in the source file when known.
    """
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = (*prefix, *err["loc"])
            field = format_loc(loc) or None
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown field (check the spelling)"
            line = line_of(loc) if line_of else None
            errors.append(ConfigError(reason, file=file, field=field, line=line))
        raise ConfigError.collect(errors) from None
