"""An HTTP/1.1 echo server to put behind a real Envoy in tests.

Filter tests against a real Envoy need an upstream that reports exactly what reached it (did
the filter add that header? strip that body? forward those trailers?) and that can be told,
per request, how to answer (a status, extra headers, trailers, a body split in chunks, a pause
in the middle of the body). ``EchoUpstream`` does both: every response is JSON describing the
request it received, ``x-echo-*`` request headers shape the response, and every request is
also recorded in ``.received`` so a test can assert on the upstream side directly.

It is built on h11 (not http.server) because tests need what simple servers get wrong: chunked
request bodies with trailers, chunked responses with trailers, and control over when each
response chunk leaves. It runs on its own thread and event loop so synchronous tests can use
it, and every read, write and wait is bounded so a broken test fails instead of hanging.

Response controls (request headers):

- ``x-echo-status: 418``: the response status.
- ``x-echo-header-<name>: value``: add response header ``<name>``.
- ``x-echo-trailer-<name>: value``: add response trailer ``<name>`` (forces chunked encoding).
- ``x-echo-chunks: N``: send the body in N chunks (chunked encoding).
- ``x-echo-gate: <id>``: after the first chunk, wait for ``upstream.release(id)`` (at most
  ``gate_timeout`` seconds, then the connection is aborted and the miss recorded in ``.errors``).
- ``x-echo-body: <text>``: answer with this text instead of the JSON description.

``GET /healthz`` answers 200 ``ok`` and is not recorded. A malformed request gets a 400.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

import h11

from ._net import DEFAULT_TIMEOUT, HttpMessage, Pairs, to_pairs, wait_for

__all__ = ["EchoUpstream", "ReceivedRequest"]


@dataclass(frozen=True)
class ReceivedRequest(HttpMessage):
    """One request as the upstream received it (after Envoy and its filters)."""

    method: str
    path: str
    http_version: str
    #: ``(name, value)`` pairs in arrival order; names are lowercase.
    headers: Pairs
    body: bytes
    trailers: Pairs
    #: The body as it was framed on the wire: one entry per HTTP/1.1 chunk for a chunked body
    #: (so a test can see how a body was split), one entry per read otherwise.
    chunks: tuple[bytes, ...]

    def describe(self) -> dict[str, Any]:
        """The JSON document the upstream answers with (see the module docstring)."""
        try:
            body, encoding = self.body.decode(), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(self.body).decode(), "base64"
        return {
            "method": self.method,
            "path": self.path,
            "http_version": self.http_version,
            "headers": [list(p) for p in self.headers],
            "body": body,
            "body_encoding": encoding,
            "trailers": [list(p) for p in self.trailers],
            "chunk_sizes": [len(c) for c in self.chunks],
        }


class _BadControl(Exception):
    """An ``x-echo-*`` header the upstream cannot honour: answered with a 400."""


class EchoUpstream:
    """The echo server. Use as a context manager, or ``start()`` / ``stop()``.

    >>> with EchoUpstream() as up:                                  # doctest: +SKIP
    ...     httpx.get(up.url("/hello")).json()["path"]
    '/hello'
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        read_timeout: float = 15.0,
        idle_timeout: float = 60.0,
        gate_timeout: float = 10.0,
    ) -> None:
        self.host = host
        #: Longest wait for the next bytes of a request that has started.
        self.read_timeout = read_timeout
        #: Longest a kept-alive connection may stay silent between requests (Envoy pools them).
        self.idle_timeout = idle_timeout
        #: Longest an ``x-echo-gate`` waits for ``release``.
        self.gate_timeout = gate_timeout
        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._cond = threading.Condition()
        self._received: list[ReceivedRequest] = []
        self._partial: dict[int, bytearray] = {}
        self._errors: list[str] = []
        self._gates: dict[str, asyncio.Event] = {}  # only touched on the loop thread
        self._reached: dict[str, threading.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> EchoUpstream:
        """Bind ``host:0`` and serve on a background thread; returns once it accepts requests."""
        if self._thread is not None:
            raise RuntimeError("EchoUpstream already started")
        self._thread = threading.Thread(target=self._run, name="envoykit-echo-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"EchoUpstream did not start within {timeout:g}s")
        if self._start_error is not None:
            raise RuntimeError(f"EchoUpstream failed to start: {self._start_error}") from self._start_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, then join the thread (bounded)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"EchoUpstream thread did not stop within {timeout:g}s")

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("EchoUpstream is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, e.g. for an Envoy STATIC cluster endpoint."""
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}{path}"

    # -- what the test inspects --------------------------------------------------------------
    @property
    def received(self) -> list[ReceivedRequest]:
        """A snapshot of every request received so far (``/healthz`` excluded), oldest first."""
        with self._cond:
            return list(self._received)

    @property
    def last(self) -> ReceivedRequest:
        """The most recent request; fails clearly when there is none."""
        with self._cond:
            if not self._received:
                raise AssertionError("the echo upstream has received no request")
            return self._received[-1]

    @property
    def errors(self) -> list[str]:
        """Problems the upstream saw (malformed requests, gates never released...)."""
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        """Forget the requests and errors recorded so far."""
        with self._cond:
            self._received.clear()
            self._errors.clear()

    def wait_for_requests(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests were received, and return them all."""
        self._wait(lambda: len(self._received) >= count, timeout, f"{count} request(s)")
        return self.received

    def wait_for_body_bytes(self, marker: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until some request body received so far (complete or not) contains ``marker``.

        This is how a test proves that a body is *streamed* to the upstream: send chunk 1, wait
        here for its bytes, and only then send chunk 2. No sleep, no guessing.
        """

        def seen() -> bool:
            bodies: list[bytes | bytearray] = [*self._partial.values(), *(r.body for r in self._received)]
            return any(marker in body for body in bodies)

        self._wait(seen, timeout, f"body bytes {marker!r}")

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(
                    f"timed out after {timeout:g}s waiting for {what} at the echo upstream "
                    f"(received {len(self._received)} request(s))"
                )

    # -- gates -------------------------------------------------------------------------------
    def release(self, gate_id: str) -> None:
        """Let a response held by ``x-echo-gate: <gate_id>`` finish (may precede the request)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("EchoUpstream is not started")
        loop.call_soon_threadsafe(lambda: self._gate(gate_id).set())

    def wait_for_gate(self, gate_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until a response has sent its first chunk and is waiting at gate ``gate_id``."""
        wait_for(lambda: self._reached_event(gate_id).is_set(), timeout, what=f"echo gate {gate_id!r}")

    def _gate(self, gate_id: str) -> asyncio.Event:
        return self._gates.setdefault(gate_id, asyncio.Event())

    def _reached_event(self, gate_id: str) -> threading.Event:
        with self._cond:
            return self._reached.setdefault(gate_id, threading.Event())

    def _error(self, message: str) -> None:
        with self._cond:
            self._errors.append(message)
            self._cond.notify_all()

    # -- the server --------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            server = loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.run_until_complete(server.wait_closed())
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader, writer)
                if request is None:
                    break
                await self._respond(conn, writer, request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            self._error(f"malformed request: {exc}")
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                headers = [("content-type", "text/plain"), ("connection", "close")]
                text = f"bad request: {exc}\n".encode()
                await self._answer(conn, writer, "GET", exc.error_status_hint, headers, [text])
        except (ConnectionError, TimeoutError, asyncio.CancelledError, h11.LocalProtocolError):
            pass
        finally:
            with self._cond:
                self._partial.pop(id(conn), None)
            writer.close()
            self._tasks.discard(task)

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await asyncio.wait_for(reader.read(65536), timeout))

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ReceivedRequest | None:
        event = await self._next_event(conn, reader, self.idle_timeout)
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise h11.RemoteProtocolError(f"expected a request, got {event!r}")
        chunked = _is_chunked(event)
        chunks: list[bytes] = []
        current = bytearray()
        with self._cond:
            self._partial[id(conn)] = partial = bytearray()
        trailers: Pairs = ()
        while True:
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            nxt = await self._next_event(conn, reader, self.read_timeout)
            if isinstance(nxt, h11.Data):
                current += nxt.data
                if nxt.chunk_end or not chunked:  # h11 may split a chunk, never merges two
                    chunks.append(bytes(current))
                    current.clear()
                with self._cond:
                    partial += nxt.data
                    self._cond.notify_all()
            elif isinstance(nxt, h11.EndOfMessage):
                trailers = to_pairs(nxt.headers)
                break
            else:
                raise h11.RemoteProtocolError(f"unexpected {type(nxt).__name__} in a request")
        if current:
            chunks.append(bytes(current))
        return ReceivedRequest(
            method=event.method.decode(),
            path=event.target.decode("latin-1"),
            http_version=event.http_version.decode(),
            headers=to_pairs(event.headers),
            body=bytes(partial),
            trailers=trailers,
            chunks=tuple(chunks),
        )

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, req: ReceivedRequest
    ) -> None:
        health = req.method in ("GET", "HEAD") and req.path == "/healthz"
        with self._cond:
            self._partial.pop(id(conn), None)
            if not health:
                self._received.append(req)
                self._cond.notify_all()
        if health:
            return await self._answer(
                conn, writer, req.method, 200, [("content-type", "text/plain")], [b"ok"]
            )
        try:
            status, headers, trailers, parts, gate = _plan(req)
        except _BadControl as exc:
            text = f"bad x-echo control: {exc}\n".encode()
            return await self._answer(conn, writer, req.method, 400, [("content-type", "text/plain")], [text])
        await self._answer(conn, writer, req.method, status, headers, parts, trailers, gate)

    async def _answer(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        parts: list[bytes],
        trailers: list[tuple[str, str]] = [],  # noqa: B006 - never mutated
        gate: str | None = None,
    ) -> None:
        """Send a response: one part with a content-length, or chunked when there are several
        parts or trailers; with a gate, wait for ``release`` after the first part."""
        no_body = method == "HEAD" or status in (204, 304)
        if not no_body and (trailers or len(parts) > 1):
            headers = [*headers, ("transfer-encoding", "chunked")]
        else:
            headers = [*headers, ("content-length", str(sum(map(len, parts))))]
        await self._send(
            conn, writer, h11.Response(status_code=status, headers=headers, reason=_reason(status))
        )
        for index, part in enumerate([] if no_body else parts):
            if part:
                await self._send(conn, writer, h11.Data(data=part))
            if index == 0 and gate is not None:
                self._reached_event(gate).set()
                try:
                    await asyncio.wait_for(self._gate(gate).wait(), self.gate_timeout)
                except TimeoutError:
                    self._error(f"gate {gate!r} was not released within {self.gate_timeout:g}s; aborted")
                    raise ConnectionAbortedError(gate) from None
        await self._send(conn, writer, h11.EndOfMessage(headers=[] if no_body else trailers))

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
        writer.write(conn.send(event) or b"")
        await asyncio.wait_for(writer.drain(), self.read_timeout)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _is_chunked(request: h11.Request) -> bool:
    return any(k == b"transfer-encoding" and b"chunked" in v.lower() for k, v in request.headers)


_Plan = tuple[int, list[tuple[str, str]], list[tuple[str, str]], list[bytes], str | None]


def _plan(req: ReceivedRequest) -> _Plan:
    """Turn the request's ``x-echo-*`` headers into (status, headers, trailers, body parts,
    gate); raises ``_BadControl``."""
    status = _int_control(req, "x-echo-status", 200, 200, 599)
    count = _int_control(req, "x-echo-chunks", 1, 1, 1000)
    headers = [(k[len("x-echo-header-") :], v) for k, v in req.headers if k.startswith("x-echo-header-")]
    trailers = [(k[len("x-echo-trailer-") :], v) for k, v in req.headers if k.startswith("x-echo-trailer-")]
    gate = req.header("x-echo-gate")
    if gate is not None:
        count = max(count, 2)  # the gate sits after the first of at least two chunks
    custom = req.header("x-echo-body")
    body = custom.encode() if custom is not None else json.dumps(req.describe()).encode()
    if not any(k == "content-type" for k, _ in headers):
        headers.insert(0, ("content-type", "text/plain" if custom is not None else "application/json"))
    # ``count`` parts of near-equal size, all non-empty when the body is long enough.
    parts = [body[i * len(body) // count : (i + 1) * len(body) // count] for i in range(count)]
    return status, headers, trailers, parts, gate


def _int_control(req: ReceivedRequest, name: str, default: int, low: int, high: int) -> int:
    raw = req.header(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise _BadControl(f"{name} must be an integer in {low}-{high}, got {raw!r}")
    return int(raw)
