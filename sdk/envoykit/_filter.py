"""``HttpFilter``: the one base class a filter author subclasses.

Every hook defaults to "continue", so a filter overrides only the phases it cares about, and
runtimes derive from the overridden hooks which phases to ask Envoy for. A hook returns
``None`` to continue or a ``Reply`` to answer the client; header and body changes are made on
the request/response object it receives.

Hooks are plain methods (portable to every placement). A hook may be ``async def`` only where
the runtime can await it (the ext_proc sidecar); other placements reject it at load.
"""

from __future__ import annotations

import difflib
import enum
import inspect
import re
import typing
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from ._config import EmptyConfig, FilterConfig, validate_config
from ._errors import FilterDefinitionError
from ._messages import Request, Response
from ._metrics import FilterMetrics
from ._phases import BodyMode, Phase, ProcessingNeeds
from ._reply import Reply
from ._shared import LocalSharedData, SharedData

__all__ = ["HttpFilter", "NoState", "FailureMode", "HookResult"]

ConfigT = TypeVar("ConfigT", bound=FilterConfig)
StateT = TypeVar("StateT")

#: What a hook may return: ``None`` (continue) or a ``Reply``; async hooks return awaitables.
HookResult = Reply | None | Awaitable[Reply | None]

_HOOKS = {phase.hook_name: phase for phase in Phase}
_PROCESS_SHARED = LocalSharedData()


class NoState:
    """The per-request state of a filter that keeps none."""

    __slots__ = ()


class FailureMode(enum.Enum):
    """What a hook that raises does to the request.

    ``CLOSED`` (default): the client gets a generic 500 and nothing about the error.
    ``OPEN``: the filter's changes in that hook are undone and the request goes on.
    Either way the error is logged with its traceback and counted in metrics.
    """

    CLOSED = "closed"
    OPEN = "open"


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


class HttpFilter(Generic[ConfigT, StateT]):
    """Base class of every envoykit filter.

    Subclass it with your config model and state type, override the hooks you need::

        class ApiKey(HttpFilter[ApiKeyConfig, ApiKeyState]):
            def on_request_headers(self, request, state):
                if request.headers.get("x-api-key") not in self.config.keys:
                    return Reply(401, "bad api key\\n")
                return None
    """

    #: Short name used in metrics, logs and the default metadata namespace.
    name: ClassVar[str] = "http-filter"
    #: The config model (inferred from ``HttpFilter[Config, State]`` when not set).
    Config: ClassVar[type[FilterConfig]] = EmptyConfig
    #: The per-request state type; instantiated with no arguments for each request.
    State: ClassVar[type[Any]] = NoState
    #: How ``on_request_body`` / ``on_response_body`` get the body (see ``BodyMode``).
    request_body_mode: ClassVar[BodyMode] = BodyMode.BUFFERED
    response_body_mode: ClassVar[BodyMode] = BodyMode.BUFFERED

    config: ConfigT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = _kebab(cls.__name__)
        _infer_generic_types(cls)
        _check_hooks(cls)

    def __init__(
        self,
        config: ConfigT | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        failure_mode: FailureMode | str = FailureMode.CLOSED,
        metadata_namespace: str | None = None,
    ) -> None:
        self.config = validate_config(self.Config, config)  # type: ignore[assignment]
        #: The instance name (a chain may hold two instances of one class under two names).
        self.name = name or type(self).name  # type: ignore[misc]
        self.failure_mode = FailureMode(failure_mode)
        self.metadata_namespace = metadata_namespace or f"envoykit.{self.name}"
        #: This filter's own metrics (``self.metrics.counter("denied").inc()``); see ``_metrics``.
        self.metrics = FilterMetrics(f"envoykit.{self.name.replace('-', '_')}")
        #: Data shared by all requests (and, inside Envoy, all workers); see ``_shared``.
        self.shared: SharedData = _PROCESS_SHARED

    # -- hooks: each defaults to "continue" -----------------------------------------------
    def on_request_headers(self, request: Request, state: StateT) -> HookResult:
        return None

    def on_request_body(self, request: Request, state: StateT) -> HookResult:
        return None

    def on_request_trailers(self, request: Request, state: StateT) -> HookResult:
        return None

    def on_response_headers(self, response: Response, state: StateT) -> HookResult:
        return None

    def on_response_body(self, response: Response, state: StateT) -> HookResult:
        return None

    def on_response_trailers(self, response: Response, state: StateT) -> HookResult:
        return None

    # -- introspection for runtimes --------------------------------------------------------
    def new_state(self) -> StateT:
        return self.State()  # type: ignore[no-any-return]  # State is StateT's class

    @classmethod
    def overrides(cls, phase: Phase) -> bool:
        """Whether this filter class implements ``phase`` (instead of the default continue)."""
        return getattr(cls, phase.hook_name) is not getattr(HttpFilter, phase.hook_name)

    @classmethod
    def is_async(cls, phase: Phase) -> bool:
        return inspect.iscoroutinefunction(getattr(cls, phase.hook_name))

    @classmethod
    def async_hooks(cls) -> list[str]:
        return [p.hook_name for p in Phase if cls.overrides(p) and cls.is_async(p)]

    def needs(self) -> ProcessingNeeds:
        cls = type(self)
        return ProcessingNeeds(
            request_headers=cls.overrides(Phase.REQUEST_HEADERS),
            request_body=cls.request_body_mode if cls.overrides(Phase.REQUEST_BODY) else BodyMode.NONE,
            request_trailers=cls.overrides(Phase.REQUEST_TRAILERS),
            response_headers=cls.overrides(Phase.RESPONSE_HEADERS),
            response_body=cls.response_body_mode if cls.overrides(Phase.RESPONSE_BODY) else BodyMode.NONE,
            response_trailers=cls.overrides(Phase.RESPONSE_TRAILERS),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _infer_generic_types(cls: type[HttpFilter[Any, Any]]) -> None:
    for base in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(base) is not HttpFilter:
            continue
        args = typing.get_args(base)
        if len(args) != 2:
            continue
        config_t, state_t = args
        if "Config" not in cls.__dict__ and isinstance(config_t, type):
            if not issubclass(config_t, FilterConfig):
                raise FilterDefinitionError(
                    f"{cls.__qualname__}: config type {config_t.__qualname__} must subclass "
                    "envoykit.FilterConfig"
                )
            cls.Config = config_t
        if "State" not in cls.__dict__ and isinstance(state_t, type):
            cls.State = state_t


def _check_hooks(cls: type[HttpFilter[Any, Any]]) -> None:
    """Catch the mistakes that would otherwise fail silently: a misspelt hook never runs."""
    for attr, value in cls.__dict__.items():
        if not attr.startswith("on_") or not callable(value):
            continue
        if attr not in _HOOKS:
            close = difflib.get_close_matches(attr, list(_HOOKS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise FilterDefinitionError(f"{cls.__qualname__}.{attr} is not a filter hook{hint}")
        params = [
            p
            for p in inspect.signature(value).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(params) != 3:
            names = ", ".join(p.name for p in params)
            raise FilterDefinitionError(
                f"{cls.__qualname__}.{attr}({names}) must take (self, message, state)"
            )
    for body_attr in ("request_body_mode", "response_body_mode"):
        if not isinstance(getattr(cls, body_attr), BodyMode):
            raise FilterDefinitionError(f"{cls.__qualname__}.{body_attr} must be a BodyMode")
