"""A raw HTTP/1.1 client (h11 over a plain socket) for what httpx cannot do in a test.

httpx hides framing on purpose, but filter tests need to control it: send a chunked request
body one chunk at a time and do something *between* chunks (wait until the filter or the
upstream saw chunk 1), send request trailers, read response trailers, and read a response
chunk by chunk to prove it is streamed. Every socket operation has a timeout, so a test that
waits for bytes that never come fails instead of hanging.

>>> resp = raw_request(url, "POST", body=[b"a", b"b"], trailers={"x-t": "1"})  # doctest: +SKIP
>>> resp.status, resp.trailer("x-up")                                          # doctest: +SKIP
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import h11

from ._net import HttpMessage, Pairs, to_pairs

__all__ = ["RawConnection", "RawResponse", "raw_request"]

HeaderArg = Mapping[str, str] | Iterable[tuple[str, str]]


def _items(headers: HeaderArg | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items() if isinstance(headers, Mapping) else headers)


@dataclass(frozen=True)
class RawResponse(HttpMessage):
    """A complete response: head, body, trailers, and how the body arrived."""

    status: int
    reason: str
    #: ``(name, value)`` pairs; names are lowercase.
    headers: Pairs
    body: bytes
    trailers: Pairs
    #: The body as it arrived: one entry per HTTP/1.1 chunk when chunked, per read otherwise.
    chunks: tuple[bytes, ...]


class RawConnection:
    """One HTTP/1.1 client connection, driven step by step.

    Request: ``send_head`` then any number of ``send_chunk`` then ``end`` (with trailers).
    Response: ``read_head`` then ``read_chunk`` until it returns ``None``, or ``read_response``
    for the rest at once.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.host, self.port = host, port
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = h11.Connection(h11.CLIENT)
        self._head: tuple[int, str, Pairs] | None = None
        self._chunks: list[bytes] = []
        self._trailers: Pairs = ()
        self._chunked_response = False
        self._done = False

    # -- request -----------------------------------------------------------------------------
    def send_head(
        self, method: str, path: str, headers: HeaderArg | None = None, *, content_length: int | None = None
    ) -> None:
        """Send the request head; chunked unless ``content_length`` is given (or headers say)."""
        items = _items(headers)
        names = {k.lower() for k, _ in items}
        if "host" not in names:
            items.insert(0, ("host", f"{self.host}:{self.port}"))
        if "content-length" not in names and "transfer-encoding" not in names:
            if content_length is None:
                items.append(("transfer-encoding", "chunked"))
            else:
                items.append(("content-length", str(content_length)))
        self._write(h11.Request(method=method, target=path, headers=items))

    def send_chunk(self, data: bytes) -> None:
        """Send one body chunk (one HTTP/1.1 chunk when the body is chunked)."""
        if data:
            self._write(h11.Data(data=data))

    def end(self, trailers: HeaderArg | None = None) -> None:
        """Finish the request, with trailers if given (they need a chunked body)."""
        self._write(h11.EndOfMessage(headers=_items(trailers)))

    # -- response ----------------------------------------------------------------------------
    def read_head(self) -> tuple[int, str, Pairs]:
        """Read up to the final response head (skips 1xx); returns (status, reason, headers)."""
        while self._head is None:
            event = self._next()
            if isinstance(event, h11.Response):
                headers = to_pairs(event.headers)
                self._chunked_response = any(
                    k == "transfer-encoding" and "chunked" in v.lower() for k, v in headers
                )
                self._head = (event.status_code, bytes(event.reason).decode("latin-1"), headers)
            elif not isinstance(event, h11.InformationalResponse):
                raise ConnectionError(f"expected a response head, got {event!r}")
        return self._head

    def read_chunk(self) -> bytes | None:
        """The next body chunk as it arrived (a whole HTTP/1.1 chunk when chunked); ``None`` at
        the end of the response, whose trailers are then in ``read_response().trailers``."""
        self.read_head()
        if self._done:
            return None
        current = bytearray()
        while True:
            event = self._next()
            if isinstance(event, h11.Data):
                current += event.data
                if event.chunk_end or not self._chunked_response:
                    self._chunks.append(bytes(current))
                    return bytes(current)
            elif isinstance(event, h11.EndOfMessage):
                self._trailers = to_pairs(event.headers)
                self._done = True
                if current:
                    self._chunks.append(bytes(current))
                    return bytes(current)
                return None
            else:
                raise ConnectionError(f"unexpected {event!r} in a response body")

    def read_response(self) -> RawResponse:
        """Read the rest of the response; chunks already read with ``read_chunk`` are included."""
        status, reason, headers = self.read_head()
        while self.read_chunk() is not None:
            pass
        return RawResponse(
            status, reason, headers, b"".join(self._chunks), self._trailers, tuple(self._chunks)
        )

    # -- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write(self, event: Any) -> None:
        data = self._conn.send(event)
        if data:
            self._sock.sendall(data)

    def _next(self) -> Any:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"invalid or truncated response: {exc}") from exc
            if event is h11.NEED_DATA:
                self._conn.receive_data(self._sock.recv(65536))  # bounded by the socket timeout
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection before the response ended")
            return event


def raw_request(
    url: str,
    method: str = "GET",
    *,
    headers: HeaderArg | None = None,
    body: bytes | Sequence[bytes] = b"",
    trailers: HeaderArg | None = None,
    between_chunks: Callable[[int], None] | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """Send one request on a fresh connection and read the whole response.

    ``body`` as ``bytes`` is sent with a content-length unless ``trailers`` are given; as a
    sequence of ``bytes`` it is sent chunked, one HTTP/1.1 chunk per item, and
    ``between_chunks(i)`` runs after chunk ``i`` is sent and before the next one (not after the
    last), so a test can wait there for the filter or the upstream to see chunk ``i``.
    When the server answers early (a filter rejecting the request) and closes the connection,
    the rest of the body is dropped and that answer is returned.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"raw_request needs an http:// URL with a host, got {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    chunks = [body] if isinstance(body, bytes) else list(body)
    chunked = not isinstance(body, bytes) or trailers is not None
    with RawConnection(parts.hostname, parts.port or 80, timeout=timeout) as conn:
        try:
            conn.send_head(method, path, headers, content_length=None if chunked else len(chunks[0]))
            for index, chunk in enumerate(chunks):
                conn.send_chunk(chunk)
                if between_chunks is not None and index < len(chunks) - 1:
                    between_chunks(index)
            conn.end(trailers)
        except ConnectionError as exc:
            try:
                return conn.read_response()
            except (ConnectionError, OSError, h11.ProtocolError):
                raise exc from None
        return conn.read_response()
