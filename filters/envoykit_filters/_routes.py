"""Per-route overrides: the one way library filters let a route differ from the filter's defaults.

A filter config carries ``routes: [{match: {...}, ...override fields}]``; the first entry whose
``match`` holds for the request wins. Matching uses only what every placement sees (path, host,
Envoy's route name), so an override selects the same routes in the sidecar and inside Envoy.
Filters pick the override in ``on_request_headers`` and keep it in per-request state for the
response hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from pydantic import model_validator

from envoykit import FilterConfig, Request

__all__ = ["RouteMatch", "first_match"]


class RouteMatch(FilterConfig):
    """Which requests an override applies to; every condition given must hold."""

    #: Path (without query) starts with this.
    prefix: str | None = None
    #: Path (without query) equals this.
    path: str | None = None
    #: Envoy's route name (``name:`` of the route in the route config).
    route_name: str | None = None
    #: ``:authority`` without port, case-insensitive.
    host: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> RouteMatch:
        if self.prefix is None and self.path is None and self.route_name is None and self.host is None:
            raise ValueError("give at least one of prefix, path, route_name, host")
        return self

    def matches(self, request: Request) -> bool:
        path = request.path_only
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.path is not None and path != self.path:
            return False
        if self.host is not None and request.authority.rsplit(":", 1)[0].lower() != self.host.lower():
            return False
        return self.route_name is None or request.attributes.route_name == self.route_name


class _HasMatch(Protocol):
    @property
    def match(self) -> RouteMatch: ...


Override = TypeVar("Override", bound=_HasMatch)


def first_match(overrides: Sequence[Override], request: Request) -> Override | None:
    """The first override whose ``match`` holds for ``request``, else ``None``."""
    for override in overrides:
        if override.match.matches(request):
            return override
    return None
