"""Header-name checks shared by the library filters' configs (run once, at load)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["header_name", "header_names", "header_value"]

_TOKEN = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


def header_name(name: str) -> str:
    """``name`` lower-cased; ``ValueError`` unless it is an HTTP field name (no pseudo-headers)."""
    key = name.lower()
    if key.startswith(":"):
        raise ValueError(f"{name!r}: pseudo-headers cannot be configured here")
    if not _TOKEN.fullmatch(key):
        raise ValueError(f"{name!r} is not a valid header name")
    return key


def header_names(names: Iterable[str]) -> tuple[str, ...]:
    """Each name checked and lower-cased, duplicates dropped, order kept."""
    return tuple(dict.fromkeys(header_name(n) for n in names))


def header_value(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name}: header values cannot contain CR, LF or NUL")
    return value
