"""envoykit's exception hierarchy, one tree so callers can catch at the level they care about.

::

    EnvoykitError
    ├── ConfigError          invalid configuration: carries file, field and reason
    ├── HeaderError          an invalid header name/value, or a write where headers are read-only
    ├── MetadataError        a dynamic-metadata value Envoy cannot carry (not JSON-like)
    └── FilterDefinitionError  a filter class that cannot run as written
        └── PlacementError     a filter that cannot run in the chosen placement (e.g. async hooks
                               outside the sidecar)
"""

from __future__ import annotations

__all__ = [
    "EnvoykitError",
    "ConfigError",
    "HeaderError",
    "MetadataError",
    "FilterDefinitionError",
    "PlacementError",
]


class EnvoykitError(Exception):
    """Base class of every error envoykit raises on purpose."""


class ConfigError(EnvoykitError):
    """Configuration that fails validation. ``str()`` reads ``file:line: field: reason``."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.field = field
        self.line = line
        #: Further problems found in the same document (each a ``ConfigError``).
        self.others: list[ConfigError] = []
        super().__init__(self._render())

    def __str__(self) -> str:
        return "\n".join([self._render(), *(o._render() for o in self.others)])

    @classmethod
    def collect(cls, errors: list[ConfigError]) -> ConfigError:
        """One error that reports all of ``errors`` (first one primary)."""
        first = errors[0]
        first.others = list(errors[1:])
        return first

    def _render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.reason}"

    def located(self, *, file: str | None = None, prefix: str = "", line: int | None = None) -> ConfigError:
        """The same error placed inside a larger document (used when loading files)."""
        field = ".".join(p for p in (prefix, self.field or "") if p) or None
        moved = ConfigError(self.reason, file=file or self.file, field=field, line=line or self.line)
        moved.others = [o.located(file=file, prefix=prefix) for o in self.others]
        return moved


class HeaderError(EnvoykitError, ValueError):
    """An invalid header, or a header write that the current phase does not allow."""


class MetadataError(EnvoykitError, ValueError):
    """A dynamic-metadata value that is not JSON-like (str, int, float, bool, None, list, dict)."""


class FilterDefinitionError(EnvoykitError, TypeError):
    """A filter class that cannot run as written (bad hook, bad Config/State declaration)."""


class PlacementError(FilterDefinitionError):
    """A filter that needs something the chosen placement cannot give (e.g. ``async`` hooks)."""
