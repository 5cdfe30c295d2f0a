"""REGISTRY_ONLY egress: only listed external hosts pass (a service mesh's egress gateway)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, field_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request

__all__ = ["EgressAllowlist", "EgressAllowlistConfig"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ENTRY = re.compile(r"^(\*\.)?([a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])(:\d{1,5})?$", re.IGNORECASE)


def _split(authority: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too), host lower-case without a trailing dot."""
    text = authority.strip().lower()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    else:
        host, sep, tail = text.rpartition(":")
        if sep and tail.isdigit() and ":" not in host:
            port = int(tail)
        else:
            host = text
    return host.rstrip("."), port


class EgressAllowlistConfig(FilterConfig):
    #: ``api.example.com``, ``api.example.com:443``, ``*.example.com`` (subdomains only),
    #: ``*.example.com:8443``. No port: any port.
    hosts: tuple[str, ...] = Field(min_length=1)
    status: int = Field(502, ge=400, le=599)
    #: ``{host}`` is replaced by the refused authority.
    body: str = "egress to {host} is not allowed: the host is not in the egress allowlist\n"

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not _ENTRY.match(entry.strip()):
                raise ValueError(f"{entry!r}: expected host, host:port, *.domain or *.domain:port")
            _, port = _split(entry)
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"{entry!r}: port out of range")
        return value


@dataclass
class EgressState:
    pass


class EgressAllowlist(HttpFilter[EgressAllowlistConfig, EgressState]):
    """Refuse requests whose ``:authority`` is not an allowed external host (502)."""

    name = "egress-allowlist"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._exact: dict[str, frozenset[int] | None] = {}
        self._suffixes: list[tuple[str, int | None]] = []
        for entry in self.config.hosts:
            host, port = _split(entry)
            if host.startswith("*."):
                self._suffixes.append((host[1:], port))  # ".example.com"
            elif port is None:
                self._exact[host] = None
            elif host not in self._exact or self._exact[host] is not None:
                self._exact[host] = (self._exact.get(host) or frozenset()) | {port}
        self._allowed = self.metrics.counter("allowed")
        self._blocked = self.metrics.counter("blocked")

    def _permits(self, host: str, port: int | None) -> bool:
        if host in self._exact:
            ports = self._exact[host]
            if ports is None or port in ports:
                return True
        for suffix, wanted in self._suffixes:
            if host.endswith(suffix) and len(host) > len(suffix) and (wanted is None or wanted == port):
                return True
        return False

    def on_request_headers(self, request: Request, state: EgressState) -> Reply | None:
        authority = request.authority
        host, port = _split(authority)
        if port is None:
            port = _DEFAULT_PORTS.get((request.scheme or "http").lower())
        if host and self._permits(host, port):
            self._allowed.inc()
            return None
        request.metadata["blocked_host"] = authority
        self._blocked.inc()
        return Reply(
            self.config.status,
            self.config.body.replace("{host}", authority[:255]),
            details="envoykit_egress_not_allowed",
        )
