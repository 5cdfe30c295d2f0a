"""The in-proxy runtime: an envoykit chain as a proxy-wasm HTTP filter.

Envoy calls ``proxy_on_*`` callbacks; the C shim forwards each to a method here, which runs the
matching ``Stream`` phase (``drive_sync``: nothing can be awaited inside Envoy) and writes the
recorded changes back through the ``Host``. Semantics match the sidecar so a chain answers the
same in both placements:

- buffered bodies: headers are held (``StopIteration``) until the body is complete, so a body
  change can fix content-length; streamed bodies: content-length is dropped up front, each
  chunk is processed as it passes;
- a local reply goes out with the headers the response hooks added; when Envoy then runs this
  filter's response callbacks on that reply, they pass it through untouched;
- a bug in this runtime answers 500 (or continues, with ``failure_mode_allow``), never crashes
  Envoy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .._attributes import Attributes, TlsInfo
from .._chain import SENT_UPSTREAM, Chain, PhaseRun, Stream, drive_sync
from .._config import validate_config
from .._errors import ConfigError, EnvoykitError
from .._filter import FailureMode, HttpFilter
from .._headers import Headers
from .._messages import Request, Response
from .._metrics import MetricKind
from .._phases import BodyMode, Phase
from ._abi import BufferType, Callback, DataStatus, HeaderMap, HeadersStatus, Host, LogLevel, TrailersStatus

__all__ = ["InProxyRuntime", "PLACEMENT"]

_M = TypeVar("_M", Request, Response)

PLACEMENT = "inside Envoy (Wasm)"
_ERROR_BODY = b"internal server error\n"


@dataclass(frozen=True)
class _Direction:
    headers_phase: Phase
    headers_map: int
    trailers_map: int
    body_buffer: int
    body: Callable[[Stream, bytes, bool], PhaseRun[Response | None]]
    trailers: Callable[[Stream, Headers], PhaseRun[Response | None]]
    message: Callable[[Stream], Any]
    trailer_phase: Phase
    #: Callbacks that may follow this direction's headers, and those of the other direction to come.
    after_headers: int
    later: int


_REQUEST = _Direction(
    Phase.REQUEST_HEADERS,
    HeaderMap.REQUEST_HEADERS,
    HeaderMap.REQUEST_TRAILERS,
    BufferType.HTTP_REQUEST_BODY,
    Stream.request_body,
    Stream.request_trailers,
    lambda stream: stream.request,
    Phase.REQUEST_TRAILERS,
    Callback.REQUEST_BODY | Callback.REQUEST_TRAILERS,
    Callback.RESPONSE_HEADERS | Callback.RESPONSE_BODY | Callback.RESPONSE_TRAILERS,
)
_RESPONSE = _Direction(
    Phase.RESPONSE_HEADERS,
    HeaderMap.RESPONSE_HEADERS,
    HeaderMap.RESPONSE_TRAILERS,
    BufferType.HTTP_RESPONSE_BODY,
    Stream.response_body,
    Stream.response_trailers,
    lambda stream: stream.response,
    Phase.RESPONSE_TRAILERS,
    Callback.RESPONSE_BODY | Callback.RESPONSE_TRAILERS,
    0,
)
_DIRECTIONS = (_REQUEST, _RESPONSE)


_REQUEST_HEADERS = Phase.REQUEST_HEADERS
_RESPONSE_HEADERS = Phase.RESPONSE_HEADERS
_STREAMED = BodyMode.STREAMED
_BUFFERED = BodyMode.BUFFERED
_NONE = BodyMode.NONE
_new = object.__new__
_REQUEST_AFTER = Callback.REQUEST_BODY | Callback.REQUEST_TRAILERS
_REQUEST_LATER = Callback.RESPONSE_HEADERS | Callback.RESPONSE_BODY | Callback.RESPONSE_TRAILERS
_RESPONSE_AFTER = Callback.RESPONSE_BODY | Callback.RESPONSE_TRAILERS
# The ABI's numbers as module globals for the hot path (a class attribute costs a lookup more).
_CB_REQUEST_HEADERS = Callback.REQUEST_HEADERS
_CB_RESPONSE_HEADERS = Callback.RESPONSE_HEADERS
_MAP_REQUEST_HEADERS = HeaderMap.REQUEST_HEADERS
_MAP_RESPONSE_HEADERS = HeaderMap.RESPONSE_HEADERS
_CONTINUE = HeadersStatus.CONTINUE
_STOP_ITERATION = HeadersStatus.STOP_ITERATION


class _Context(Stream):
    """One request in this VM: the chain's ``Stream`` plus what the runtime tracks for it.

    One object per request (inside Envoy each object costs thousands of Wasm instructions):
    attributes are read from Envoy's properties on first use, metadata is made on first use,
    and header maps stay the shim's raw bytes until a hook reads them (``_Message._init_lazy``).
    """

    __slots__ = (
        "_attributes",
        "_decode",
        "_make_headers",
        "_runtime",
        "body_done",
        "buffered",
        "last",
        "replied",
    )

    _attributes: Attributes | None
    _runtime: InProxyRuntime
    replied: bool
    last: bool
    buffered: dict[int, int] | None
    body_done: set[int] | None

    @classmethod
    def _prototype(cls, chain: Chain, runtime: InProxyRuntime) -> _Context:
        """What every request's context starts as (``Stream.__init__``'s fields plus the runtime's):
        each request gets a copy (``InProxyRuntime._clone``), not a constructor call."""
        ctx = _new(cls)
        ctx.chain = chain
        ctx._attributes = None
        ctx._store = None
        #: Per request when a filter keeps state (``InProxyRuntime._fresh_states``).
        ctx.states = chain._shared_states or ()
        ctx._view = None
        # One filter: its namespace from the start, so hooks need not set it (``_lean_plan``).
        ctx._namespace = chain.filters[0].metadata_namespace if len(chain.filters) == 1 else "envoykit"
        ctx.request = None
        ctx.response = None
        ctx.finished = False
        ctx.replied_by = None
        ctx._runtime = runtime
        ctx._decode = runtime._decode
        ctx._make_headers = runtime._make_headers
        ctx.replied = False
        #: Set by the callback after which the chain has nothing left to do for this request.
        ctx.last = False
        #: Bytes Envoy has buffered for us so far, per direction (buffered body mode); made on use.
        ctx.buffered = None
        #: Directions whose body hooks already ran (e.g. at trailers time); made on use.
        ctx.body_done = None
        return ctx

    @property
    def attributes(self) -> Attributes:
        # Properties cost a host round trip each: fetch them only if something reads one.
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = self._runtime._attributes()
        return attributes

    @attributes.setter
    def attributes(self, value: Attributes) -> None:
        self._attributes = value

    @property
    def stream(self) -> Stream:
        return self

    def _release(self) -> None:
        """The runtime is done with this request: break the message -> stream reference cycles."""
        self.request = self.response = None


class _EnvoyMetrics:
    """Filter metrics as Envoy stats (``/stats`` shows them as ``wasmcustom.<name>``)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.kinds: dict[int, MetricKind] = {}

    def define(self, kind: MetricKind, name: str) -> int:
        metric_id = self.host.define_metric(kind.value, name)
        self.kinds[metric_id] = kind
        return metric_id

    def add(self, metric_id: int, delta: int) -> None:
        self.host.increment_metric(metric_id, delta)

    def set(self, metric_id: int, value: int) -> None:
        self.host.record_metric(metric_id, value)  # on a gauge, "record" sets it

    def record(self, metric_id: int, value: int) -> None:
        self.host.record_metric(metric_id, value)


class _EnvoySharedData:
    """``SharedData`` over Envoy's shared data: one store for every worker's VM."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def get(self, key: str) -> tuple[bytes | None, int]:
        return self.host.get_shared_data(key)

    def set(self, key: str, value: bytes, cas: int = 0) -> bool:
        return self.host.set_shared_data(key, value, cas)


class InProxyRuntime:
    """The root context: holds the chain built at configure time and one ``_Context`` per request."""

    def __init__(self, host: Host, filters: Mapping[str, type[HttpFilter[Any, Any]]]) -> None:
        self.host = host
        #: Filter classes compiled into the module, by the names plugin configs use.
        self.filters = dict(filters)
        self.chain: Chain | None = None
        self.failure_mode_allow = False
        self._contexts: dict[int, _Context] = {}
        #: ``callbacks()`` of the configured chain (all until configured): what the shim forwards.
        self.wanted = Callback.ALL
        self._modes = (BodyMode.NONE, BodyMode.NONE)
        self._plans: tuple[Any, Any] = ((), ())
        # Header maps: the shim hands them over as raw bytes, decoded only if a hook reads them
        # (``_Message._init_lazy``); a host without that (the in-process fake) gives decoded lists.
        blob = getattr(host, "get_header_blob", None)
        self._get_headers: Callable[[int], Any] = host.get_headers if blob is None else blob
        self._decode: Callable[[Any], list[tuple[str, str]]] | None = (
            None if blob is None else host.decode_headers  # type: ignore[attr-defined]
        )
        self._forget = host.forget_context
        #: Or the whole ``Headers`` from the raw bytes in one call (the shim's ``make_headers``).
        self._make_headers: Callable[[Any, str | None], Headers] | None = (
            None if blob is None else getattr(host, "make_headers", None)
        )
        self._apply: Callable[[int, list[tuple[str, str]], list[str]], None] | None = getattr(
            host, "apply_header_changes", None
        )
        #: Copies a prototype object (the shim's C ``clone``: one call instead of a store per slot).
        self._clone: Callable[[Any], Any] = getattr(host, "clone", None) or _py_clone
        #: ``_write_headers``, in the shim's C when it has it (no Python frame per written map).
        self._write: Callable[[int, Headers], None] = (
            getattr(host, "write_headers", None) or self._write_headers
        )
        self._ctx_proto: _Context | None = None
        #: Filters keep per-request state: each context gets its own ``states`` list.
        self._fresh_states = False
        self._request_proto = _message_prototype(Request)
        self._response_proto = _message_prototype(Response)
        #: The header phases' hooks for the inline loop (``_lean_plan``); None: ``Stream._run_sync``.
        self._lean: tuple[_LeanPlan | None, _LeanPlan | None] = (None, None)
        #: Whether the request's context is done after its request / response headers, by eos.
        self._done_after: tuple[tuple[bool, bool], tuple[bool, bool]] = ((False, False), (False, False))

    # -- configuration -----------------------------------------------------------------------
    def on_configure(self, configuration: bytes) -> bool:
        """Validate the plugin configuration; ``False`` makes Envoy reject it at load."""
        try:
            self.chain, self.failure_mode_allow = self._build(configuration)
        except EnvoykitError as exc:
            self.host.log(LogLevel.ERROR, f"envoykit: invalid plugin configuration: {exc}")
            return False
        self.chain.bind_metrics(_EnvoyMetrics(self.host))
        self.chain.bind_shared_data(_EnvoySharedData(self.host))
        self.wanted = self.callbacks()
        #: Body mode per body buffer type (0 request, 1 response), looked up on every callback.
        self._modes = (self.chain.needs.request_body, self.chain.needs.response_body)
        #: The header phases' hooks, looked up once (``Stream._run_sync``).
        self._plans = (self.chain._plan[_REQUEST_HEADERS], self.chain._plan[_RESPONSE_HEADERS])
        self._lean = (_lean_plan(self.chain, self._plans[0]), _lean_plan(self.chain, self._plans[1]))
        self._fresh_states = self.chain._shared_states is None
        self._ctx_proto = _Context._prototype(self.chain, self)
        wanted = self.wanted
        self._done_after = (
            # [eos]: after the request headers, no callback of either direction is left to run
            (not wanted & (_REQUEST_LATER | _REQUEST_AFTER), not wanted & _REQUEST_LATER),
            (not wanted & _RESPONSE_AFTER, True),
        )
        return True

    def _build(self, configuration: bytes) -> tuple[Chain, bool]:
        try:
            document = json.loads(configuration or b"{}")
        except ValueError as exc:
            raise ConfigError(f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError("expected a JSON object")
        unknown = set(document) - {"chain", "filters", "failure_mode_allow"}
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)}")
        specs = document.get("filters", [])
        if not isinstance(specs, list):
            raise ConfigError("must be a list", field="filters")
        built: list[HttpFilter[Any, Any]] = []
        for i, spec in enumerate(specs):
            built.append(self._filter(spec, i))
        chain = Chain(built, name=str(document.get("chain", "default")))
        chain.require_sync(PLACEMENT)
        allow = document.get("failure_mode_allow", False)
        if not isinstance(allow, bool):
            raise ConfigError("must be true or false", field="failure_mode_allow")
        return chain, allow

    def _filter(self, spec: Any, index: int) -> HttpFilter[Any, Any]:
        where = f"filters[{index}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("filter"), str):
            raise ConfigError('expected {"filter": NAME, "config": {...}}', field=where)
        unknown = set(spec) - {"filter", "name", "config", "failure_mode", "metadata_namespace"}
        if unknown:
            raise ConfigError(f"unknown field(s) {sorted(unknown)}", field=where)
        cls = self.filters.get(spec["filter"])
        if cls is None:
            known = ", ".join(sorted(self.filters)) or "none"
            raise ConfigError(
                f"no filter {spec['filter']!r} in this module (has: {known})", field=f"{where}.filter"
            )
        config = validate_config(cls.Config, spec.get("config") or {}, prefix=("filters", index, "config"))
        try:
            return cls(
                config,
                name=spec.get("name"),
                failure_mode=spec.get("failure_mode", "closed"),
                metadata_namespace=spec.get("metadata_namespace"),
            )
        except ValueError as exc:
            raise ConfigError(str(exc), field=where) from None

    # -- per request -----------------------------------------------------------------------------
    def callbacks(self) -> int:
        """Which per-request callbacks can change anything for this chain, as a ``Callback`` mask.

        The shim returns ``Continue`` for the others without entering Python: a callback this
        runtime would answer with ``Continue`` and no side effect costs nothing inside Envoy.
        """
        chain = self.chain
        if chain is None or not chain.filters:
            return 0
        needs = chain.needs
        wanted = Callback.REQUEST_HEADERS  # always: response hooks see the request's headers
        if needs.request_body is not BodyMode.NONE:
            wanted |= Callback.REQUEST_BODY | Callback.REQUEST_TRAILERS  # trailers end a buffered body
        if needs.wants(Phase.REQUEST_TRAILERS):
            wanted |= Callback.REQUEST_TRAILERS
        if needs.response_body is not BodyMode.NONE:
            wanted |= Callback.RESPONSE_HEADERS | Callback.RESPONSE_BODY | Callback.RESPONSE_TRAILERS
        if needs.wants(Phase.RESPONSE_HEADERS):
            wanted |= Callback.RESPONSE_HEADERS
        if needs.wants(Phase.RESPONSE_TRAILERS):
            wanted |= Callback.RESPONSE_HEADERS | Callback.RESPONSE_TRAILERS
        return wanted

    def on_delete(self, context_id: int) -> None:
        ctx = self._contexts.pop(context_id, None)
        if ctx is not None:
            ctx._release()

    # The two header callbacks are the hot path (a header-only chain gets nothing else). Inside
    # Envoy the shim runs their common case in C (``fast_path``); these Python versions serve
    # the rest (a chain whose hooks need ``Stream._run_sync``, a response without its request's
    # context) and hosts without the shim. Each is one Python frame around the chain's hooks,
    # with ``_guard``'s logic and the messages' set-up (copies of prototypes) inline: inside
    # Envoy every Python call costs ~1,000 Wasm instructions, every object ~2,500.
    def on_request_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int:
        contexts = self._contexts
        ctx = contexts.get(context_id)
        if ctx is None:
            proto = self._ctx_proto
            if proto is None or not self.wanted & _CB_REQUEST_HEADERS:
                return 0  # not configured, or a callback the chain cannot act on: pass
            # A request's context is made on its first callback that reaches Python (the shim
            # skips proxy_on_context_create: a header-only chain is entered twice per request).
            ctx = contexts[context_id] = self._clone(proto)
            if self._fresh_states:
                error = self._give_states(ctx)
                if error is not None:
                    return self._runtime_error(ctx, error, _STOP_ITERATION)
        elif ctx.replied:
            return 0  # Envoy running our own local reply through us: pass
        try:
            eos = end_of_stream != 0  # the shim passes Envoy's 0/1 through
            # ``Stream._start_request``, as a copy: headers stay raw until a hook reads them.
            request = ctx.request = self._clone(self._request_proto)
            request._owner = ctx
            request._raw_headers = self._get_headers(_MAP_REQUEST_HEADERS)
            request.end_of_stream = eos
            return self._run_headers(0, ctx, context_id, request, eos)
        except Exception as exc:  # noqa: BLE001 - must never reach Envoy as a trap
            return self._runtime_error(ctx, exc, _STOP_ITERATION)

    def on_response_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int:
        contexts = self._contexts
        ctx = contexts.get(context_id)
        if ctx is None:
            proto = self._ctx_proto
            if proto is None or not self.wanted & _CB_RESPONSE_HEADERS:
                return 0
            ctx = contexts[context_id] = self._clone(proto)
            if self._fresh_states:
                error = self._give_states(ctx)
                if error is not None:
                    return self._runtime_error(ctx, error, _STOP_ITERATION)
        elif ctx.replied:
            return 0
        try:
            eos = end_of_stream != 0
            # ``Stream._start_response``, inline.
            request = ctx.request
            if request is None:
                request = ctx._need_request()
            if request._headers is None:  # ``_freeze_headers``, inline
                request._readonly = SENT_UPSTREAM
            else:
                request._headers._readonly_reason = SENT_UPSTREAM
            response = ctx.response = self._clone(self._response_proto)
            response._owner = ctx
            response._raw_headers = self._get_headers(_MAP_RESPONSE_HEADERS)
            response.end_of_stream = eos
            response.request = request
            return self._run_headers(1, ctx, context_id, response, eos)
        except Exception as exc:  # noqa: BLE001 - must never reach Envoy as a trap
            return self._runtime_error(ctx, exc, _STOP_ITERATION)

    def _new_states(self) -> list[Any]:
        """A request's own state per filter (filters that keep per-request state)."""
        assert self.chain is not None
        return [f.new_state() for f in self.chain.filters]

    def _give_states(self, ctx: _Context) -> Exception | None:
        """``ctx.states = self._new_states()``, or what a filter's ``new_state`` raised. Then no
        filter can run for this request: its context is marked replied (every later callback
        passes) and the caller hands the error to ``_runtime_error`` (500, or on with
        ``failure_mode_allow``), as the shim's C path does."""
        try:
            ctx.states = self._new_states()
        except Exception as exc:  # noqa: BLE001 - must never reach Envoy as a trap
            ctx.replied = True
            return exc
        return None

    def _run_headers(self, which: int, ctx: _Context, context_id: int, message: Any, eos: bool) -> int:
        """A header phase's hooks (``which``: 0 request, 1 response) on a fresh message, then
        ``_headers_tail``: what the shim's C fast path does, for the chains it leaves to Python."""
        lean = self._lean[which]
        if lean is None:
            plan = self._plans[which]
            reply = ctx._run_sync(_DIRECTIONS[which].headers_phase, message, plan) if plan else None
            if reply is not None:
                return self._send(ctx, reply, _STOP_ITERATION)
            return self._headers_tail(which, ctx, context_id, message, eos)
        states = ctx.states
        for position, hook, index, namespace in lean:  # ``Stream._run_sync``, inline
            if namespace is not None:
                ctx._namespace = namespace
                if ctx._view is not None:
                    ctx._view.namespace = namespace
            try:
                result = hook(message, states[index])
            except Exception as exc:  # noqa: BLE001 - the filter's failure mode decides
                return self._resume_headers(which, ctx, context_id, message, eos, position, None, exc)
            if result is not None or message._body_changed:
                return self._resume_headers(which, ctx, context_id, message, eos, position, result, None)
        return self._headers_tail(which, ctx, context_id, message, eos)

    def _resume_headers(
        self,
        which: int,
        ctx: _Context,
        context_id: int,
        message: Any,
        eos: bool,
        position: int,
        result: Any,
        exc: Exception | None,
    ) -> int:
        """The inline hook loop (here or in the shim's C) met something other than "continue,
        body untouched" at hook ``position``: finish the phase as ``Stream._run_sync`` would."""
        reply = self._lean_rest(ctx, _DIRECTIONS[which].headers_phase, message, position, result, exc)
        if reply is not None:
            return self._send(ctx, reply, _STOP_ITERATION)
        return self._headers_tail(which, ctx, context_id, message, eos)

    def _headers_tail(self, which: int, ctx: _Context, context_id: int, message: Any, eos: bool) -> int:
        """After a header phase's hooks without a reply: write back what they changed, emit
        metadata, and drop the context when no callback is left for it."""
        direction = _DIRECTIONS[which]
        if self._modes[which] is not _NONE and not eos:
            return self._headers_done(ctx, context_id, direction, message, eos)
        if eos and message._body_changed:
            self._body_dropped()
        headers = message._headers  # None: no hook read them, so none changed them
        if headers is not None and headers._touched:
            self._write(direction.headers_map, headers)
        store = ctx._store
        if store is not None and store._dirty:
            self._emit_metadata(ctx)
        if self._done_after[which][eos]:
            del self._contexts[context_id]
            ctx.request = ctx.response = None  # ``_finish``, inline
            self._forget(context_id)
        return _CONTINUE

    def fast_path(self) -> tuple[Any, ...] | None:
        """What the shim's C needs to run the header callbacks' common case itself (its
        ``set_fast_path``; field order fixed there), or None before a configuration.

        Per phase: the inline loop's hooks as ``(hook, filter index, namespace)``, or None when
        ``Stream._run_sync`` must run them (then the shim calls the Python callback); the
        message prototype; where to resume in Python (``_resume_headers``) and the tail for held
        bodies and metadata (``_headers_tail``); when the context is done, by end of stream; and
        whether the direction's body mode is NONE."""
        if self._ctx_proto is None:
            return None
        spec: list[Any] = [
            self._contexts,
            self._ctx_proto,
            self._new_states if self._fresh_states else None,
            SENT_UPSTREAM,
            self._runtime_error,
        ]
        for which, proto in ((0, self._request_proto), (1, self._response_proto)):
            lean = self._lean[which]
            spec += [
                None if lean is None else tuple((hook, index, ns) for _, hook, index, ns in lean),
                proto,
                partial(self._resume_headers, which),
                partial(self._headers_tail, which),
                self._done_after[which],
                self._modes[which] is _NONE,
            ]
        return tuple(spec)

    def _lean_rest(
        self,
        ctx: _Context,
        phase: Phase,
        message: Request | Response,
        position: int,
        result: Any,
        exc: Exception | None,
    ) -> Response | None:
        """The inline hook loop met something other than "continue, body untouched" at hook
        ``position`` (a reply, a body change, an exception, a bad result): what
        ``Stream._run_sync`` does with it, then the phase's remaining hooks through it. The loop
        hands over at the first such hook, so the body before it was the message's initial one."""
        plan = ctx.chain._plan[phase]
        index, flt, _, _ = plan[position]
        body_snap = (b"", False)
        if exc is None:
            try:
                outcome = ctx._checked(flt, phase, result, message, False, b"")
            except Exception as error:  # noqa: BLE001 - a filter bug must never take the stream down
                outcome = ctx._failed(flt, phase, error, message, body_snap, None)
        else:
            outcome = ctx._failed(flt, phase, exc, message, body_snap, None)
        if outcome is not None:
            return drive_sync(ctx._replied(outcome, flt, index, phase))
        rest = plan[position + 1 :]
        return ctx._run_sync(phase, message, rest) if rest else None

    def on_request_body(self, context_id: int, body_size: int, end_of_stream: int) -> int:
        return self._guard(
            context_id,
            Callback.REQUEST_BODY,
            DataStatus.STOP_ITERATION_AND_BUFFER,
            self._body,
            _REQUEST,
            body_size,
            end_of_stream,
        )

    def on_request_trailers(self, context_id: int, num_trailers: int) -> int:
        return self._guard(
            context_id, Callback.REQUEST_TRAILERS, TrailersStatus.STOP_ITERATION, self._trailers, _REQUEST
        )

    def on_response_body(self, context_id: int, body_size: int, end_of_stream: int) -> int:
        return self._guard(
            context_id,
            Callback.RESPONSE_BODY,
            DataStatus.STOP_ITERATION_AND_BUFFER,
            self._body,
            _RESPONSE,
            body_size,
            end_of_stream,
        )

    def on_response_trailers(self, context_id: int, num_trailers: int) -> int:
        return self._guard(
            context_id, Callback.RESPONSE_TRAILERS, TrailersStatus.STOP_ITERATION, self._trailers, _RESPONSE
        )

    # -- engine --------------------------------------------------------------------------------
    def _guard(self, context_id: int, bit: int, stop: int, step: Callable[..., int], *args: Any) -> int:
        """Run one callback; a runtime bug fails closed (500) or open, never into Envoy."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            if self.chain is None or not self.wanted & bit:
                return 0  # not configured, or a callback the chain cannot act on: pass
            ctx = self._contexts[context_id] = self._clone(self._ctx_proto)
            if self._fresh_states:
                error = self._give_states(ctx)
                if error is not None:
                    return self._runtime_error(ctx, error, stop)
        elif ctx.replied:
            return 0  # Envoy running our own local reply through us: pass
        try:
            status = step(ctx, *args)
        except Exception as exc:  # noqa: BLE001 - must never reach Envoy as a trap
            return self._runtime_error(ctx, exc, stop)
        if ctx.last and not ctx.replied:
            self._finish(context_id, ctx)
        return status

    def _runtime_error(self, ctx: _Context, exc: Exception, stop: int) -> int:
        self.host.log(LogLevel.ERROR, f"envoykit: in-proxy runtime error: {type(exc).__name__}: {exc}")
        if self.failure_mode_allow:
            return 0
        ctx.replied = True
        self.host.send_local_response(500, "envoykit_runtime_error", _ERROR_BODY, [], -1)
        return stop

    def _finish(self, context_id: int, ctx: _Context) -> None:
        """No callback of this request is left for the chain: drop its state now, and the shim
        skips proxy_on_delete (a reply keeps its context: Envoy's callbacks on our own reply
        must still find it and pass through)."""
        del self._contexts[context_id]
        ctx._release()
        self._forget(context_id)

    def _body_dropped(self) -> None:
        # proxy-wasm cannot add a body to a bodiless request
        self.host.log(LogLevel.ERROR, "envoykit: a body set in on_request_headers is dropped in-proxy")

    def _headers_done(
        self, ctx: _Context, context_id: int, direction: _Direction, message: Request | Response, eos: bool
    ) -> int:
        """After a headers phase without a reply: write back what the hooks changed."""
        if eos and message._body_changed:
            self._body_dropped()
        mode = self._modes[direction.body_buffer]
        if mode is _STREAMED and not eos:
            message.headers.unfreeze()
            message.headers.remove("content-length")  # chunks may change size: go chunked
        if message._headers is not None and message._headers._touched:  # None: no hook read them
            self._write_headers(direction.headers_map, message.headers)
        store = ctx._store
        if store is not None and store._dirty:
            self._emit_metadata(ctx)
        if mode is _BUFFERED and not eos:
            return HeadersStatus.STOP_ITERATION  # hold headers so the body can fix content-length
        if not self.wanted & (direction.later | (0 if eos else direction.after_headers)):
            self._finish(context_id, ctx)
        return HeadersStatus.CONTINUE

    def _body(self, ctx: _Context, direction: _Direction, size: int, end_of_stream: int) -> int:
        end_of_stream = bool(end_of_stream)
        mode = self._modes[direction.body_buffer]
        if mode is BodyMode.NONE or (ctx.body_done is not None and direction.body_buffer in ctx.body_done):
            return DataStatus.CONTINUE
        if mode is BodyMode.BUFFERED:
            if ctx.buffered is None:
                ctx.buffered = {}
            ctx.buffered[direction.body_buffer] = size
            if not end_of_stream:
                return DataStatus.STOP_ITERATION_AND_BUFFER
        return self._run_body(ctx, direction, size, end_of_stream)

    def _run_body(self, ctx: _Context, direction: _Direction, size: int, end_of_stream: bool) -> int:
        data = self.host.get_buffer(direction.body_buffer, 0, size) if size else b""
        reply = drive_sync(direction.body(ctx, data, end_of_stream), PLACEMENT)
        if reply is not None:
            return self._send(ctx, reply, DataStatus.STOP_ITERATION_AND_BUFFER)
        message = direction.message(ctx)
        buffered = self._modes[direction.body_buffer] is BodyMode.BUFFERED
        if message.body_changed:
            self.host.set_buffer(direction.body_buffer, 0, size, message.body)
        if buffered:  # headers were held: they go out now, the engine's content-length included
            if ctx.body_done is None:
                ctx.body_done = set()
            ctx.body_done.add(direction.body_buffer)
            if message._headers is not None:  # else still raw: no hook read them, so none changed them
                self._write_headers(direction.headers_map, message.headers)
        self._emit_metadata(ctx)
        ctx.last = end_of_stream and not self.wanted & direction.later
        return DataStatus.CONTINUE

    def _trailers(self, ctx: _Context, direction: _Direction) -> int:
        pending = None if ctx.buffered is None else ctx.buffered.get(direction.body_buffer)
        if pending is not None and (ctx.body_done is None or direction.body_buffer not in ctx.body_done):
            # Buffered body followed by trailers: the body never saw end_of_stream; finish it now.
            self._run_body(ctx, direction, pending, True)
            if ctx.replied:
                return TrailersStatus.STOP_ITERATION
        if not ctx.chain.needs.wants(direction.trailer_phase):
            return TrailersStatus.CONTINUE
        trailers = Headers._trusted(self.host.get_headers(direction.trailers_map))
        reply = drive_sync(direction.trailers(ctx, trailers), PLACEMENT)
        if reply is not None:
            return self._send(ctx, reply, TrailersStatus.STOP_ITERATION)
        self._write_headers(direction.trailers_map, trailers)
        self._emit_metadata(ctx)
        ctx.last = not self.wanted & direction.later
        return TrailersStatus.CONTINUE

    # -- host plumbing ---------------------------------------------------------------------------
    def _write_headers(self, map_type: int, headers: Headers) -> None:
        touched = headers._touched
        if not touched:
            return  # the common case: nothing changed, no host call
        # What ``header_changes`` gives, without its lists: per changed name (sorted, so the
        # host sees the same order every time), replace the first value, add the others, or
        # remove the name when it has none left.
        names = sorted(touched) if len(touched) > 1 else list(touched)
        touched.clear()
        if self._apply is not None:
            self._apply(map_type, headers._items, names)  # the loop below, in the shim's C
            return
        host = self.host
        items = headers._items
        for name in names:
            key = name.encode("latin-1")
            first = True
            for k, value in items:
                if k == name:
                    if first:
                        host.replace_header(map_type, key, value.encode("latin-1"))
                        first = False
                    else:
                        host.add_header(map_type, key, value.encode("latin-1"))
            if first:
                host.remove_header(map_type, key)

    def _send(self, ctx: _Context, response: Response, stop: int) -> int:
        ctx.replied = True
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.items()
            if k not in (":status", "content-length")  # Envoy computes content-length itself
        ]
        reply = getattr(response, "reply", None)
        details = getattr(reply, "details", "") or "envoykit_local_reply"
        grpc_status = getattr(reply, "grpc_status", None)
        self._emit_metadata(ctx)
        self.host.send_local_response(
            response.status, details, response.body, headers, -1 if grpc_status is None else grpc_status
        )
        return stop

    def _emit_metadata(self, ctx: _Context) -> None:
        store = ctx._store
        if store is None or not store._dirty:
            return
        for namespace, values in store.take_changes().items():
            # Envoy keeps what a Wasm filter sets as filter state: %FILTER_STATE(wasm.<ns>)%.
            self.host.set_property([namespace], json.dumps(values, separators=(",", ":")).encode())

    def _attributes(self) -> Attributes:
        get = self.host.get_property
        source, source_port = _split_address(get(["source", "address"]))
        destination, destination_port = _split_address(get(["destination", "address"]))
        mtls = get(["connection", "mtls"])
        tls_version = _text(get(["connection", "tls_version"]))
        tls = None
        if tls_version:
            tls = TlsInfo(
                version=tls_version,
                sni=_text(get(["connection", "requested_server_name"])),
                peer_certificate_validated=bool(mtls and mtls[:1] == b"\x01"),
            )
        return Attributes(
            source_address=source,
            source_port=source_port,
            destination_address=destination,
            destination_port=destination_port,
            tls=tls,
            route_name=_text(get(["xds", "route_name"])),
            request_id=_text(get(["request", "id"])),
        )


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value else None


def _split_address(value: bytes | None) -> tuple[str | None, int | None]:
    """Envoy's ``ip:port`` / ``[v6]:port`` property into (ip, port)."""
    text = _text(value)
    if not text:
        return None, None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text, None
    return host.strip("[]"), int(port)


#: The inline hook loop's steps for one header phase: (position in the phase's plan, bound hook,
#: filter index, metadata namespace to switch to, or None when the chain has one filter).
_LeanPlan = tuple[tuple[int, Any, int, str | None], ...]


def _lean_plan(chain: Chain, plan: Any) -> _LeanPlan | None:
    """``plan`` for the runtime's inline hook loop, or None when ``Stream._run_sync`` must run it
    (an observer times hooks; a fail-open filter needs an undo point before its hook)."""
    if chain.observer is not None or not chain._all_sync:
        return None
    if any(flt.failure_mode is FailureMode.OPEN for _, flt, _, _ in plan):
        return None
    single = len(chain.filters) == 1
    return tuple(
        (position, hook, index, None if single else flt.metadata_namespace)
        for position, (index, flt, hook, _) in enumerate(plan)
    )


def _message_prototype(cls: type[_M]) -> _M:
    """What a message made by the hot path starts as (``Stream._start_request``'s fields)."""
    message = _new(cls)
    message._owner = None
    message._headers = message._readonly = message._raw_headers = None
    message._trailers = message._attributes = message._metadata = None
    message.end_of_stream = False
    message._body = b""
    message._body_changed = False
    if isinstance(message, Response):
        message.request = None  # type: ignore[assignment]
        message.is_local_reply = False
        message.reply = None
    return message


_SLOTS: dict[type, tuple[Any, ...]] = {}


def _py_clone(proto: Any) -> Any:
    """The shim's C ``clone`` for hosts without it (the in-process fake Envoy): same result.

    Copies through each slot's own descriptor (a subclass may hide a slot behind a property)."""
    cls = type(proto)
    slots = _SLOTS.get(cls)
    if slots is None:
        slots = _SLOTS[cls] = tuple(
            klass.__dict__[name] for klass in cls.__mro__ for name in klass.__dict__.get("__slots__", ())
        )
    copy = _new(cls)
    for slot in slots:
        try:
            value = slot.__get__(proto, cls)
        except AttributeError:
            continue  # unset in the prototype: unset in the copy
        slot.__set__(copy, value)
    return copy
