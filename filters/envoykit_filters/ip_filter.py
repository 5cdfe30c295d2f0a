"""IP allow/deny lists over the real client address (Envoy's source address, or x-forwarded-for
behind N trusted proxies)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request

from ._clientip import IpNetwork, client_address, in_any, networks, parse_ip, parse_networks
from ._routes import RouteMatch, first_match

__all__ = ["IpFilter", "IpFilterConfig", "IpFilterRoute"]


class IpFilterRoute(FilterConfig):
    """Different lists for some routes (replace the filter's ``allow``/``deny`` there)."""

    match: RouteMatch
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else parse_networks(value)


class IpFilterConfig(FilterConfig):
    #: Addresses/CIDRs let through. Empty: every address not denied.
    allow: tuple[str, ...] = ()
    #: Addresses/CIDRs refused; deny wins over allow.
    deny: tuple[str, ...] = ()
    #: Proxies in front of Envoy that append to x-forwarded-for (0: use the connection's address).
    xff_num_trusted_hops: int = Field(0, ge=0, le=32)
    status: int = Field(403, ge=400, le=599)
    body: str = "forbidden\n"
    routes: tuple[IpFilterRoute, ...] = ()

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_networks(value)


@dataclass
class IpFilterState:
    pass


class _Lists:
    __slots__ = ("allow", "deny")

    def __init__(self, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
        self.allow: tuple[IpNetwork, ...] = networks(allow)
        self.deny: tuple[IpNetwork, ...] = networks(deny)


class IpFilter(HttpFilter[IpFilterConfig, IpFilterState]):
    """Refuse requests whose client address is denied, or not allowed when an allow list is set."""

    name = "ip-filter"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        config = self.config
        self._default = _Lists(config.allow, config.deny)
        self._routes = [
            (
                route,
                _Lists(
                    config.allow if route.allow is None else route.allow,
                    config.deny if route.deny is None else route.deny,
                ),
            )
            for route in config.routes
        ]
        self._reply = Reply(config.status, config.body, details="envoykit_ip_filter_denied")
        self._allowed = self.metrics.counter("allowed")
        self._denied = self.metrics.counter("denied")

    def on_request_headers(self, request: Request, state: IpFilterState) -> Reply | None:
        lists = self._default
        if self._routes:
            override = first_match([route for route, _ in self._routes], request)
            if override is not None:
                lists = next(found for route, found in self._routes if route is override)
        text = client_address(request, self.config.xff_num_trusted_hops)
        ip = parse_ip(text)
        if ip is None:
            reason = "no valid client address"
        elif lists.deny and in_any(ip, lists.deny):
            reason = "denied"
        elif lists.allow and not in_any(ip, lists.allow):
            reason = "not allowed"
        else:
            self._allowed.inc()
            return None
        request.metadata["client_ip"] = text or ""
        request.metadata["reason"] = reason
        self._denied.inc()
        return self._reply
