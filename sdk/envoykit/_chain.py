"""Chains of filters and the per-request engine that runs them.

A ``Chain`` is an ordered list of filters. Request phases run first to last, response phases
last to first (Envoy's decoder/encoder order). A hook that returns a ``Reply`` stops the phase:
later filters never see the request, and the reply travels back through the response hooks of
the filter that sent it and of every filter before it (so CORS or security headers still
decorate a 401 from an auth filter; ``response.is_local_reply`` tells them apart).

The engine, ``Stream``, does no I/O. Each phase method is a generator that yields only when a
hook is ``async`` and needs awaiting; ``drive_sync`` runs it where nothing can be awaited
(Wasm, the sync test host) and ``drive_async`` where it can (the sidecar). One logic, two
drivers, no duplicated chain code per runtime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Generator, Sequence
from typing import Any, Protocol, TypeVar

from ._attributes import Attributes
from ._errors import FilterDefinitionError, PlacementError
from ._filter import FailureMode, HttpFilter, NoState
from ._headers import Headers
from ._messages import Request, Response
from ._metadata import Metadata, MetadataStore
from ._metrics import MetricsBackend
from ._phases import BodyMode, Phase, ProcessingNeeds
from ._reply import Reply
from ._shared import SharedData

__all__ = [
    "Chain",
    "Stream",
    "ChainObserver",
    "PhaseRun",
    "drive_sync",
    "drive_async",
    "header_changes",
    "DEFAULT_ERROR_REPLY",
]

log = logging.getLogger("envoykit.chain")

#: What a client gets when a fail-closed filter raises: nothing about the error itself.
DEFAULT_ERROR_REPLY = Reply(500, "internal server error\n", details="envoykit_filter_error")

T = TypeVar("T")

#: A running phase: yields awaitables (async hooks only), returns the final local reply, if any.
PhaseRun = Generator[Awaitable[Any], Any, T]
#: What fail-open restores when a hook raises: the headers' and the namespace's checkpoints.
_UndoPoint = tuple[Any, Any]
#: A phase's hooks in run order: (filter index, filter, bound hook, is async).
_Plan = tuple[tuple[int, HttpFilter[Any, Any], Any, bool], ...]


class _Ran(Generator[Awaitable[Any], Any, T]):
    """A phase of a chain without async hooks, already run: the drivers return its value at once."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def send(self, value: Any) -> Awaitable[Any]:
        raise StopIteration(self.value)

    def throw(self, *args: Any) -> Awaitable[Any]:
        raise StopIteration(self.value)

    def close(self) -> None:
        pass


_new = object.__new__
#: Why the request's headers are read-only once the response starts.
SENT_UPSTREAM = "the request has already gone upstream"
_REQUEST_BODY = Phase.REQUEST_BODY
_RESPONSE_BODY = Phase.RESPONSE_BODY
_OPEN = FailureMode.OPEN

#: The usual outcome of a phase (no reply), made once.
_RAN_NONE: _Ran[Any] = _Ran(None)


_BODY_LOCKED = (
    "the body can only be changed in a body hook (on_request_body/on_response_body), or in "
    "on_request_headers of a request without a body"
)


class ChainObserver(Protocol):
    """Receives one call per hook run; runtimes plug metrics in here."""

    def hook_done(self, chain: str, filter_name: str, phase: Phase, seconds: float, failed: bool) -> None: ...


class Chain:
    """An ordered list of filters that runs as one unit in any placement."""

    def __init__(
        self,
        filters: Sequence[HttpFilter[Any, Any]],
        *,
        name: str = "default",
        error_reply: Reply = DEFAULT_ERROR_REPLY,
        observer: ChainObserver | None = None,
    ) -> None:
        self.filters: tuple[HttpFilter[Any, Any], ...] = tuple(filters)
        self.name = name
        self.error_reply = error_reply
        self.observer = observer
        seen: set[str] = set()
        for f in self.filters:
            if not isinstance(f, HttpFilter):
                raise FilterDefinitionError(f"chain {name!r}: {f!r} is not an HttpFilter instance")
            if f.name in seen:
                raise FilterDefinitionError(
                    f"chain {name!r}: two filters are named {f.name!r}; give one a distinct name="
                )
            seen.add(f.name)
        needs = ProcessingNeeds()
        for f in self.filters:
            needs = needs | f.needs()
        #: The union of what the filters need; runtimes ask Envoy for exactly this.
        self.needs = needs
        # Filters that keep no state all share one (attribute-less) NoState: nothing to make per request.
        self._shared_states: tuple[Any, ...] | None = None
        #: No hook is async: phases run as plain calls (``Stream._phase``).
        self._all_sync = not any(type(f).async_hooks() for f in self.filters)
        if all(type(f).State is NoState and type(f).new_state is HttpFilter.new_state for f in self.filters):
            self._shared_states = (NoState(),) * len(self.filters)
        # Precomputed per phase: (index, filter, bound hook, is_async) in run order.
        self._plan: dict[Phase, _Plan] = {}
        for phase in Phase:
            order = range(len(self.filters))
            if not phase.is_request:
                order = reversed(order)  # type: ignore[assignment]
            self._plan[phase] = tuple(
                (
                    i,
                    self.filters[i],
                    getattr(self.filters[i], phase.hook_name),
                    type(self.filters[i]).is_async(phase),
                )
                for i in order
                if type(self.filters[i]).overrides(phase)
            )

    @property
    def async_hooks(self) -> list[str]:
        """``filter.hook`` for every ``async def`` hook in the chain."""
        return [f"{f.name}.{hook}" for f in self.filters for hook in type(f).async_hooks()]

    def require_sync(self, placement: str) -> None:
        """Raise ``PlacementError`` if any hook is async (for placements that cannot await)."""
        hooks = self.async_hooks
        if hooks:
            raise PlacementError(
                f"chain {self.name!r} cannot run {placement}: async hooks {', '.join(hooks)} "
                "can only run in the ext_proc/ext_authz sidecar; make them plain `def`"
            )

    def bind_metrics(self, backend: MetricsBackend) -> None:
        """Send every filter's own metrics to ``backend`` (the runtime's metrics system)."""
        for f in self.filters:
            f.metrics.bind(backend)

    def bind_shared_data(self, store: SharedData) -> None:
        """Give every filter the runtime's shared data (Envoy's, inside a Wasm VM)."""
        for f in self.filters:
            f.shared = store

    def stream(
        self,
        attributes: Attributes | None = None,
        metadata: MetadataStore | None = None,
    ) -> Stream:
        """Start processing one request."""
        return Stream(self, attributes or Attributes(), metadata)

    def __repr__(self) -> str:
        return f"Chain({self.name!r}, {[f.name for f in self.filters]})"


class Stream:
    """One request going through a chain. Runtimes call the phase methods in HTTP order."""

    __slots__ = (
        "_namespace",
        "_store",
        "_view",
        "attributes",
        "chain",
        "finished",
        "replied_by",
        "request",
        "response",
        "states",
    )

    #: How messages made with raw headers (``_start_request``) decode them; None: already a
    #: list of ``(name, value)`` text pairs.
    _decode: Any = None
    #: Or a callable ``(raw, readonly_reason) -> Headers`` that does it all (in-proxy: the shim's C).
    _make_headers: Any = None

    def __init__(self, chain: Chain, attributes: Attributes, metadata: MetadataStore | None = None) -> None:
        # Subclasses on a hot path (the in-proxy runtime) repeat these assignments inline.
        self.chain = chain
        self.attributes = attributes
        #: The request's dynamic metadata; made on first use (``metadata``).
        self._store = metadata
        shared = chain._shared_states
        self.states: Sequence[Any] = shared if shared is not None else [f.new_state() for f in chain.filters]
        #: The filters' view of the metadata (made on first use; its namespace follows the hook).
        self._view: Metadata | None = None
        self._namespace = "envoykit"
        self.request: Request | None = None
        self.response: Response | None = None
        #: Set once a local reply has been produced: no further phase will run.
        self.finished = False
        #: Name of the filter whose hook returned the (first) local reply, or that failed closed.
        self.replied_by: str | None = None

    @property
    def metadata(self) -> MetadataStore:
        """All namespaces of this request's dynamic metadata."""
        store = self._store
        if store is None:
            store = self._store = MetadataStore()
        return store

    def _metadata_view(self) -> Metadata:
        view = self._view
        if view is None:
            view = self._view = Metadata(self.metadata, self._namespace)
        return view

    def _set_namespace(self, namespace: str) -> None:
        self._namespace = namespace
        if self._view is not None:
            self._view.namespace = namespace

    # -- request side ----------------------------------------------------------------------
    def request_headers(self, headers: Headers, end_of_stream: bool = False) -> PhaseRun[Response | None]:
        headers.unfreeze()
        return self._phase(Phase.REQUEST_HEADERS, self._start_request(headers, None, end_of_stream))

    def _start_request(self, headers: Headers | None, raw: object, end_of_stream: bool) -> Request:
        """The request, from ``headers`` or from ``raw`` headers decoded on first read (``_decode``);
        its attributes, metadata and trailers are made on first read too."""
        request = self.request = _new(Request)
        request._owner = self
        request._headers = headers
        request._raw_headers = raw
        request._readonly = request._trailers = request._attributes = request._metadata = None
        request.end_of_stream = end_of_stream
        request._body = b""
        request._body_changed = False
        return request

    def _start_response(
        self, headers: Headers | None, raw: object, end_of_stream: bool, *, freeze: bool = True
    ) -> Response:
        request = self._need_request()
        if freeze:
            request._freeze_headers(SENT_UPSTREAM)
        response = self.response = _new(Response)
        response._owner = self
        response._headers = headers
        response._raw_headers = raw
        response._readonly = response._trailers = response._attributes = response._metadata = None
        response.end_of_stream = end_of_stream
        response._body = b""
        response._body_changed = False
        response.request = request
        response.is_local_reply = False
        response.reply = None
        return response

    def request_body(self, data: bytes, end_of_stream: bool) -> PhaseRun[Response | None]:
        request = self._need_request()
        request._load_body(data, end_of_stream)
        if self.chain.needs.request_body is BodyMode.STREAMED:
            request._freeze_headers("in streamed mode the headers went upstream before the body")
        return self._body_phase(Phase.REQUEST_BODY, request, len(data), self.chain.needs.request_body)

    def request_trailers(self, trailers: Headers) -> PhaseRun[Response | None]:
        request = self._need_request()
        request.trailers = trailers
        request.end_of_stream = True
        request._freeze_headers("the request headers went upstream before the trailers")
        return self._phase(Phase.REQUEST_TRAILERS, request)

    # -- response side ---------------------------------------------------------------------
    def response_headers(self, headers: Headers, end_of_stream: bool = False) -> PhaseRun[Response | None]:
        return self._phase(Phase.RESPONSE_HEADERS, self._start_response(headers, None, end_of_stream))

    def response_body(self, data: bytes, end_of_stream: bool) -> PhaseRun[Response | None]:
        response = self._need_response()
        response._load_body(data, end_of_stream)
        if self.chain.needs.response_body is BodyMode.STREAMED:
            response._freeze_headers("in streamed mode the headers went downstream before the body")
        return self._body_phase(Phase.RESPONSE_BODY, response, len(data), self.chain.needs.response_body)

    def response_trailers(self, trailers: Headers) -> PhaseRun[Response | None]:
        response = self._need_response()
        response.trailers = trailers
        response.end_of_stream = True
        response._freeze_headers("the response headers went downstream before the trailers")
        return self._phase(Phase.RESPONSE_TRAILERS, response)

    # -- engine ----------------------------------------------------------------------------
    def _need_request(self) -> Request:
        if self.request is None:
            # A runtime may skip request headers (e.g. a response-only chain); start empty.
            self._start_request(Headers(), None, False)
        return self.request  # type: ignore[return-value]

    def _need_response(self) -> Response:
        if self.response is None:
            self._start_response(Headers(), None, False, freeze=False)
        return self.response  # type: ignore[return-value]

    def _phase(self, phase: Phase, message: Request | Response) -> PhaseRun[Response | None]:
        """Run ``phase``; a chain without async hooks runs as plain calls, no generator frames
        (each costs several microseconds inside Envoy's Wasm VM)."""
        if self.chain._all_sync:
            reply = self._run_sync(phase, message)
            return _RAN_NONE if reply is None else _Ran(reply)
        return self._run(phase, message)

    def _body_phase(
        self, phase: Phase, message: Request | Response, received: int, mode: BodyMode
    ) -> PhaseRun[Response | None]:
        if self.chain._all_sync:
            return _Ran(self._sized(self._run_sync(phase, message), message, received, mode))
        return self._body_phase_async(phase, message, received, mode)

    def _body_phase_async(
        self, phase: Phase, message: Request | Response, received: int, mode: BodyMode
    ) -> PhaseRun[Response | None]:
        reply = yield from self._run(phase, message)
        return self._sized(reply, message, received, mode)

    @staticmethod
    def _sized(
        reply: Response | None, message: Request | Response, received: int, mode: BodyMode
    ) -> Response | None:
        """After a body phase: a buffered body whose length changed takes its content-length along
        (Envoy rejects a body that contradicts the content-length it holds). Every runtime then
        just sends the header changes, content-length included."""
        headers = message.headers
        if (
            reply is None
            and mode is BodyMode.BUFFERED
            and message.body_changed
            and len(message.body) != received
            and "content-length" in headers
            and headers._readonly_reason is None
        ):
            headers.set("content-length", str(len(message.body)))
        return reply

    def _run_sync(
        self, phase: Phase, message: Request | Response, plan: _Plan | None = None
    ) -> Response | None:
        """``_run`` for chains without async hooks.

        Without an observer each hook is called inline (what ``_call_sync`` does, minus the
        timing): inside Envoy's Wasm VM a Python call costs about a thousand instructions.
        """
        chain = self.chain
        if plan is None:
            plan = chain._plan[phase]
        body_hook = phase is _REQUEST_BODY or phase is _RESPONSE_BODY
        if chain.observer is not None:
            for index, flt, hook, _ in plan:
                outcome = self._call_sync(phase, index, flt, hook, message, body_hook)
                if outcome is not None:
                    return drive_sync(self._replied(outcome, flt, index, phase))
            return None
        states = self.states
        for index, flt, hook, _ in plan:
            namespace = self._namespace = flt.metadata_namespace
            if self._view is not None:
                self._view.namespace = namespace
            body = message._body
            changed = message._body_changed
            undo = None if flt.failure_mode is not _OPEN else self._undo_point(flt, message)
            try:
                result = hook(message, states[index])
                if result is None and (not message._body_changed or body_hook or message._body is body):
                    continue
                outcome = self._checked(flt, phase, result, message, body_hook, body)
            except Exception as exc:  # noqa: BLE001 - a filter bug must never take the stream down
                outcome = self._failed(flt, phase, exc, message, (body, changed), undo)
            if outcome is not None:
                return drive_sync(self._replied(outcome, flt, index, phase))
        return None

    def _run(self, phase: Phase, message: Request | Response) -> PhaseRun[Response | None]:
        """Run ``phase``'s hooks; on a reply, finish it through the response hooks."""
        body_hook = phase is Phase.REQUEST_BODY or phase is Phase.RESPONSE_BODY
        for index, flt, hook, is_async in self.chain._plan[phase]:
            outcome = yield from self._call(phase, index, flt, hook, is_async, message, body_hook)
            if outcome is not None:
                return (yield from self._replied(outcome, flt, index, phase))
        return None

    def _replied(
        self, reply: Reply, flt: HttpFilter[Any, Any], index: int, phase: Phase
    ) -> Generator[Awaitable[Any], Any, Response]:
        if self.replied_by is None:
            self.replied_by = flt.name
        return self._local_reply(reply, index, replier_included=phase.is_request)

    def _call_sync(
        self,
        phase: Phase,
        index: int,
        flt: HttpFilter[Any, Any],
        hook: Any,
        message: Request | Response,
        body_hook: bool,
    ) -> Reply | None:
        """Call one sync hook: its reply, or what its failure mode makes of an exception."""
        self._set_namespace(flt.metadata_namespace)
        body_snap = (message._body, message._body_changed)
        # Only fail-open needs to undo a failed hook's changes: take those copies only then.
        undo = self._undo_point(flt, message) if flt.failure_mode is FailureMode.OPEN else None
        observer = self.chain.observer
        started = time.perf_counter() if observer is not None else 0.0  # a clock read is a host call in Wasm
        failed = False
        try:
            result = hook(message, self.states[index])
            if result is None and (body_hook or not message._body_changed or message._body is body_snap[0]):
                return None
            return self._checked(flt, phase, result, message, body_hook, body_snap[0])
        except Exception as exc:  # noqa: BLE001 - a filter bug must never take the stream down
            failed = True
            return self._failed(flt, phase, exc, message, body_snap, undo)
        finally:
            if observer is not None:
                observer.hook_done(self.chain.name, flt.name, phase, time.perf_counter() - started, failed)

    def _call(
        self,
        phase: Phase,
        index: int,
        flt: HttpFilter[Any, Any],
        hook: Any,
        is_async: bool,
        message: Request | Response,
        body_hook: bool,
    ) -> Generator[Awaitable[Any], Any, Reply | None]:
        """``_call_sync`` for chains with async hooks: awaits the hook's result when it is one."""
        if not is_async:
            return self._call_sync(phase, index, flt, hook, message, body_hook)
        self._set_namespace(flt.metadata_namespace)
        body_snap = (message._body, message._body_changed)
        undo = self._undo_point(flt, message) if flt.failure_mode is FailureMode.OPEN else None
        observer = self.chain.observer
        started = time.perf_counter() if observer is not None else 0.0
        failed = False
        try:
            result = yield hook(message, self.states[index])
            return self._checked(flt, phase, result, message, body_hook, body_snap[0])
        except Exception as exc:  # noqa: BLE001 - a filter bug must never take the stream down
            failed = True
            return self._failed(flt, phase, exc, message, body_snap, undo)
        finally:
            if observer is not None:
                observer.hook_done(self.chain.name, flt.name, phase, time.perf_counter() - started, failed)

    def _undo_point(self, flt: HttpFilter[Any, Any], message: Request | Response) -> _UndoPoint:
        return message.headers.checkpoint(), self.metadata.checkpoint(flt.metadata_namespace)

    @staticmethod
    def _checked(
        flt: HttpFilter[Any, Any],
        phase: Phase,
        result: Any,
        message: Request | Response,
        body_hook: bool,
        body_before: bytes,
    ) -> Reply | None:
        """The hook's result, once it is known to keep the rules (raises if it does not)."""
        if result is not None and not isinstance(result, Reply):
            raise FilterDefinitionError(
                f"{flt.name}.{phase.hook_name} returned {result!r}; return None or a Reply"
            )
        if (
            not body_hook
            and message._body_changed
            and message._body is not body_before
            # A bodiless request may be given one here (the transcoder builds gRPC frames).
            and not (phase is Phase.REQUEST_HEADERS and message.end_of_stream)
        ):
            raise FilterDefinitionError(f"{flt.name}.{phase.hook_name}: {_BODY_LOCKED}")
        return result

    def _failed(
        self,
        flt: HttpFilter[Any, Any],
        phase: Phase,
        exc: Exception,
        message: Request | Response,
        body_snap: tuple[bytes, bool],
        undo: _UndoPoint | None,
    ) -> Reply | None:
        message._body, message._body_changed = body_snap
        if undo is not None:
            message.headers.rollback(undo[0])
            self.metadata.rollback(flt.metadata_namespace, undo[1])
        return self._on_error(flt, phase, exc)

    def _on_error(self, flt: HttpFilter[Any, Any], phase: Phase, exc: Exception) -> Reply | None:
        mode = flt.failure_mode
        request_id = self.attributes.request_id or (
            self.request.headers.get("x-request-id") if self.request else None
        )
        log.error(
            "filter %r raised in %s (chain %r, request %s); failing %s",
            flt.name,
            phase.hook_name,
            self.chain.name,
            request_id or "-",
            mode.value,
            exc_info=exc,
        )
        if mode is FailureMode.OPEN:
            return None
        return self.chain.error_reply

    def _local_reply(
        self, reply: Reply, index: int, *, replier_included: bool
    ) -> Generator[Awaitable[Any], Any, Response]:
        """Turn ``reply`` into the final response, through the response hooks of filters
        ``index..0`` (the replier itself only when it replied in a request phase)."""
        while True:
            response = self._reply_response(reply)
            limit = index if replier_included else index - 1
            again: tuple[Reply, int] | None = None
            for phase in (Phase.RESPONSE_HEADERS, Phase.RESPONSE_BODY):
                body_hook = phase is Phase.RESPONSE_BODY
                if body_hook:
                    response.end_of_stream = True
                for i, flt, hook, is_async in self.chain._plan[phase]:
                    if i > limit:
                        continue
                    outcome = yield from self._call(phase, i, flt, hook, is_async, response, body_hook)
                    if outcome is not None:
                        again = (outcome, i)
                        break
                if again:
                    break
            if again is None:
                self.response = response
                self.finished = True
                return response
            reply, index = again
            replier_included = False

    def _reply_response(self, reply: Reply) -> Response:
        headers = Headers([(":status", str(reply.status)), *reply.headers])
        if reply.body and "content-type" not in headers:
            headers.set("content-type", "text/plain")
        response = Response(
            headers,
            request=self._need_request(),
            attributes=self.attributes,
            metadata=self._metadata_view(),
            end_of_stream=not reply.body,
            is_local_reply=True,
        )
        response._body = reply.body
        response.reply = reply
        self._need_request()._freeze_headers("the request was answered locally")
        return response


def drive_sync(run: PhaseRun[T], placement: str = "here") -> T:
    """Run a phase where nothing can be awaited; an async hook is a ``PlacementError``."""
    if type(run) is _Ran:
        return run.value  # type: ignore[no-any-return]
    try:
        awaitable = run.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # avoid "coroutine was never awaited"
    run.close()
    raise PlacementError(f"an async hook cannot run {placement}; async hooks run only in the sidecar")


async def drive_async(run: PhaseRun[T]) -> T:
    """Run a phase, awaiting async hooks; a hook's exception is handled by the chain."""
    try:
        awaitable = run.send(None)
        while True:
            try:
                value = await awaitable
            except Exception as exc:  # noqa: BLE001 - delivered to the chain's error policy
                awaitable = run.throw(exc)
            else:
                awaitable = run.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def header_changes(headers: Headers) -> list[tuple[str, list[str]]]:
    """What filters changed since the last call: ``(name, final values)``; no values = removed.

    Runtimes turn this into their host's mutation format, then the record starts afresh.
    """
    if not headers._touched:
        return []
    changes = [(name, headers.get_all(name)) for name in sorted(headers._touched)]
    headers._touched.clear()
    return changes
