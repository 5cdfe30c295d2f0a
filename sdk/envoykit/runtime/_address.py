"""Listen addresses: the one place that turns a user's address string into a gRPC bind target.

Envoy reaches the sidecar over TCP loopback or a unix socket (an Envoy ``pipe`` address), so
exactly three spellings are accepted: ``host:port``, ``[v6]:port`` and ``unix:/abs/path.sock``.
A bare ``port`` or ``:port`` means loopback: a sidecar listening on every interface by accident
would let anyone on the network drive the filter chain directly, bypassing Envoy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .._errors import ConfigError

__all__ = ["ListenAddress", "parse_listen_address", "DEFAULT_ADDRESS", "LOOPBACK"]

#: Where the sidecar listens unless told otherwise (matches the gateway file's default).
DEFAULT_ADDRESS = "127.0.0.1:50051"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A parsed listen address: TCP (``host`` + ``port``) or a unix socket (``path``)."""

    host: str = LOOPBACK
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def target(self) -> str:
        """The gRPC bind/dial target: ``127.0.0.1:50051``, ``[::1]:50051`` or ``unix:/p.sock``."""
        if self.path is not None:
            return "unix:" + self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def with_port(self, port: int) -> ListenAddress:
        """The same address with the port the OS actually bound (for ``port 0``)."""
        return self if self.path is not None else replace(self, port=port)

    def __str__(self) -> str:
        return self.target


def parse_listen_address(text: str, *, field: str = "address") -> ListenAddress:
    """Parse ``host:port``, ``[::1]:port``, ``:port``, ``port`` or ``unix:/abs/path.sock``.

    Raises ``ConfigError`` (naming ``field``) for anything else, so a typo fails at start-up
    with the offending value rather than as an obscure gRPC bind error.
    """
    value = text.strip()
    if not value:
        raise ConfigError("an address is required (host:port or unix:/abs/path.sock)", field=field)
    if value.startswith("unix:"):
        path = value[5:]
        if path.startswith("//"):  # unix:///abs/path, the URI spelling
            path = path[2:]
        if not path.startswith("/") or path == "/":
            raise ConfigError(
                f"{text!r}: a unix socket address must be absolute: unix:/path/to.sock", field=field
            )
        return ListenAddress(host="", port=0, path=path)
    if value.isdigit():
        return ListenAddress(LOOPBACK, _port(value, text, field))
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep or not host or "]" in host:
            raise ConfigError(f"{text!r}: expected [ipv6]:port, e.g. [::1]:50051", field=field)
        return ListenAddress(host, _port(port, text, field))
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(
            f"{text!r}: expected host:port (e.g. 127.0.0.1:50051) or unix:/path.sock", field=field
        )
    if ":" in host:
        raise ConfigError(f"{text!r}: write an IPv6 host in brackets, e.g. [::1]:50051", field=field)
    return ListenAddress(host or LOOPBACK, _port(port, text, field))


def _port(port: str, text: str, field: str) -> int:
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{text!r}: the port must be a number from 0 to 65535", field=field)
    return int(port)
