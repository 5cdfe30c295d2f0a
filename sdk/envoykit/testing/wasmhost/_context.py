"""``HttpContext``: one HTTP stream in the filter, driven hook by hook (the stepwise API).

Each method is one Envoy callback: it puts the data where the host functions find it, calls
the guest's hook and returns the ``Action``. The context keeps what Envoy would have forwarded
so far (``forwarded_request`` / ``forwarded_response``), what is still held because the filter
paused, and any local reply. ``WasmHost.request`` is a driver over these same methods.

Body delivery follows Envoy: after a body hook returns Pause (StopIterationAndBuffer) the data
stays in the host's buffer and the next call sees the buffer plus the new chunk (the size the
hook receives grows); Continue forwards the buffer as the filter left it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..._headers import Headers
from ._abi import Action, BufferType, MapType, StreamType
from ._state import LocalReply, LogRecord, Pairs, PropertyValue, StreamState, property_bytes

if TYPE_CHECKING:
    from ._host import PropertyKey, WasmHost

__all__ = ["HttpContext", "Forwarded", "HeaderArg", "to_pairs", "to_headers"]

HeaderArg = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


def to_pairs(headers: HeaderArg | None) -> Pairs:
    """Header input -> the host's ``(bytes, bytes)`` pairs with lowercase names."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(_b(k).lower(), _b(v)) for k, v in items]


def to_headers(pairs: Pairs) -> Headers:
    """The host's pairs as envoykit ``Headers`` (what ``Harness`` results hold)."""
    return Headers._trusted([(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs])


def _b(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


@dataclass
class Forwarded:
    """One direction as it left the filter: headers once continued, body as forwarded so far."""

    headers: Pairs | None = None
    body: bytearray = field(default_factory=bytearray)
    trailers: Pairs | None = None
    #: How many times the body hook ran for this direction.
    body_calls: int = 0


class HttpContext:
    """One stream: ``on_request_headers`` ... ``on_response_trailers``, then ``finish()``.

    >>> ctx = host.http_context()                                              # doctest: +SKIP
    >>> ctx.on_request_headers({":path": "/deny"}, end_of_stream=True)          # doctest: +SKIP
    <Action.PAUSE: 1>
    >>> ctx.local_reply.status                                                 # doctest: +SKIP
    403
    """

    def __init__(self, host: WasmHost, properties: Mapping[PropertyKey, PropertyValue] | None = None) -> None:
        from ._host import property_path

        self.host = host
        self.id = host.new_context_id()
        self.state = StreamState(self.id)
        for key, value in (properties or {}).items():
            self.state.properties[property_path(key)] = property_bytes(value)
        self.forwarded_request = Forwarded()
        self.forwarded_response = Forwarded()
        #: Every hook called, with the action it returned (``None`` for hooks with no action).
        self.calls: list[tuple[str, Action | None]] = []
        self._finished = False
        host.vm.streams[self.id] = self.state
        self._hook("proxy_on_context_create", self.host.root_id, returns_action=False)

    # -- request -----------------------------------------------------------------------------
    def on_request_headers(self, headers: HeaderArg, *, end_of_stream: bool = False) -> Action:
        return self._headers(MapType.REQUEST_HEADERS, "proxy_on_request_headers", headers, end_of_stream)

    def on_request_body(self, chunk: bytes, *, end_of_stream: bool = False) -> Action:
        return self._body(BufferType.REQUEST_BODY, "proxy_on_request_body", chunk, end_of_stream)

    def on_request_trailers(self, trailers: HeaderArg) -> Action:
        return self._trailers(MapType.REQUEST_TRAILERS, "proxy_on_request_trailers", trailers)

    # -- response ----------------------------------------------------------------------------
    def on_response_headers(self, headers: HeaderArg, *, end_of_stream: bool = False) -> Action:
        return self._headers(MapType.RESPONSE_HEADERS, "proxy_on_response_headers", headers, end_of_stream)

    def on_response_body(self, chunk: bytes, *, end_of_stream: bool = False) -> Action:
        return self._body(BufferType.RESPONSE_BODY, "proxy_on_response_body", chunk, end_of_stream)

    def on_response_trailers(self, trailers: HeaderArg) -> Action:
        return self._trailers(MapType.RESPONSE_TRAILERS, "proxy_on_response_trailers", trailers)

    # -- end of stream -----------------------------------------------------------------------
    def finish(self) -> None:
        """``proxy_on_log``, ``proxy_on_done``, ``proxy_on_delete``, as Envoy ends a stream."""
        if self._finished:
            return
        self._finished = True
        if self.host.broken:  # a trap already ended this VM; keep the original error visible
            self.host.vm.streams.pop(self.id, None)
            return
        try:
            self._hook("proxy_on_log", returns_action=False)
            self._hook("proxy_on_done", returns_action=False)
            self._hook("proxy_on_delete", returns_action=False)
        finally:
            self.host.vm.streams.pop(self.id, None)

    # -- what tests read ---------------------------------------------------------------------
    @property
    def local_reply(self) -> LocalReply | None:
        return self.state.local_reply

    @property
    def logs(self) -> list[LogRecord]:
        """The logs this stream's context wrote."""
        return [r for r in self.host.vm.logs if r.context_id == self.id]

    def headers(self, which: MapType) -> Headers | None:
        """A header map as the filter currently sees it (``None`` once forwarded)."""
        pairs = self.state.maps.get(which)
        return None if pairs is None else to_headers(pairs)

    def buffered(self, which: BufferType) -> bytes:
        """Body bytes held because the filter paused (not yet forwarded)."""
        return bytes(self.state.buffers.get(which, b""))

    def resumed(self, request: bool = True) -> bool:
        """Whether the filter called ``proxy_continue_stream`` for this direction; reading it
        clears it (the driver consumes each resume once)."""
        kind = StreamType.REQUEST if request else StreamType.RESPONSE
        if kind in self.state.continued:
            self.state.continued.discard(kind)
            return True
        return False

    def flush(self, request: bool = True) -> None:
        """Forward whatever is held for one direction (the stream was resumed)."""
        side = self.forwarded_request if request else self.forwarded_response
        base = MapType.REQUEST_HEADERS if request else MapType.RESPONSE_HEADERS
        buffer = BufferType.REQUEST_BODY if request else BufferType.RESPONSE_BODY
        if side.headers is None and base in self.state.maps:
            side.headers = self.state.maps.pop(base)
        held = self.state.buffers.get(buffer)
        if held:
            side.body += held
            held.clear()

    # -- plumbing ----------------------------------------------------------------------------
    def _side(self, which: MapType | BufferType) -> Forwarded:
        request = which in (MapType.REQUEST_HEADERS, MapType.REQUEST_TRAILERS, BufferType.REQUEST_BODY)
        return self.forwarded_request if request else self.forwarded_response

    def _headers(self, which: MapType, hook: str, headers: HeaderArg, eos: bool) -> Action:
        pairs = to_pairs(headers)
        self.state.maps[which] = pairs
        action = self._action(hook, len(pairs), int(eos))
        if action is Action.CONTINUE and self.state.local_reply is None:
            # Envoy forwards the headers and the filter can no longer change them.
            self._side(which).headers = self.state.maps.pop(which)
        return action

    def _body(self, which: BufferType, hook: str, chunk: bytes, eos: bool) -> Action:
        buffer = self.state.buffers.setdefault(which, bytearray())
        buffer += chunk
        side = self._side(which)
        side.body_calls += 1
        action = self._action(hook, len(buffer), int(eos))
        if action is Action.CONTINUE and self.state.local_reply is None:
            self.flush(which is BufferType.REQUEST_BODY)
        return action

    def _trailers(self, which: MapType, hook: str, trailers: HeaderArg) -> Action:
        pairs = to_pairs(trailers)
        self.state.maps[which] = pairs
        action = self._action(hook, len(pairs))
        if action is Action.CONTINUE and self.state.local_reply is None:
            request = which is MapType.REQUEST_TRAILERS
            self.flush(request)
            self._side(which).trailers = self.state.maps.pop(which)
        return action

    def _action(self, hook: str, *args: int) -> Action:
        result = self._hook(hook, *args)
        return Action.CONTINUE if result is None else result

    def _hook(self, hook: str, *args: int, returns_action: bool = True) -> Action | None:
        vm = self.host.vm
        previous, vm.active = vm.active, self.state
        try:
            raw = self.host.call(hook, self.id, *args)
        finally:
            vm.active = previous
        action: Action | None = None
        if returns_action:
            action = Action.CONTINUE if raw in (0, 2) else Action.PAUSE  # 2: ContinueAndEndStream
        self.calls.append((hook, action))
        return action
