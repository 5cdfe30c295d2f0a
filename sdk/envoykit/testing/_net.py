"""Small network helpers shared by the real-Envoy parts of the testing kit.

Tests against real processes fail in two bad ways: they hang (a read with no timeout, a loop
waiting for a condition that never comes) or they flake (a fixed ``sleep`` that is long enough
on a laptop and too short on a loaded CI machine, a hard-coded port someone else holds). These
helpers exist so that every wait in the kit is *bounded* and *named*, and so that ports come
from the OS.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["DEFAULT_TIMEOUT", "HttpMessage", "Pairs", "free_port", "to_pairs", "wait_for"]

#: Header or trailer fields as ``(name, value)`` pairs, in wire order, names lowercase.
Pairs = tuple[tuple[str, str], ...]

T = TypeVar("T")

#: The timeout used by the kit when a caller does not give one. Generous on purpose: machines
#: running tests are shared and slow, and a correct test never waits for the full timeout.
DEFAULT_TIMEOUT = 20.0


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Use it instead of ``time.sleep`` whenever a test waits for something another process does:
    it returns as soon as the condition holds, and when it never does, it fails after
    ``timeout`` seconds with a ``TimeoutError`` that says *what* was awaited (and the last
    exception the predicate raised, if any), instead of hanging or failing later somewhere less
    obvious. Exceptions raised by the predicate count as "not yet" (a server that is not
    listening yet refuses connections).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = min(interval, 0.005)  # first polls are quick: most conditions hold almost at once
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - "not ready yet", reported on timeout
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, interval)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port the OS considers free right now.

    Racy by nature (another process may take the port before you bind it), so prefer binding
    port 0 and reading the bound port back; the kit does that for the echo upstream and for
    Envoy's listeners and admin. Use this only for programs that cannot report the port they
    bound.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def to_pairs(raw: Iterable[tuple[bytes, bytes]]) -> Pairs:
    """h11's header list as text pairs: UTF-8 when valid (what a filter author wrote), else latin-1."""

    def text(value: bytes) -> str:
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return bytes(value).decode("latin-1")

    return tuple((text(k), text(v)) for k, v in raw)


class HttpMessage:
    """Field access shared by the request the upstream saw and the response the client got."""

    headers: Pairs
    trailers: Pairs
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        return next((v for k, v in self.headers if k == name.lower()), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [v for k, v in self.headers if k == name.lower()]

    def trailer(self, name: str) -> str | None:
        """The first value of trailer ``name`` (case-insensitive), or ``None``."""
        return next((v for k, v in self.trailers if k == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)
