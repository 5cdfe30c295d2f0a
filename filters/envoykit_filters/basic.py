"""Small everyday filters: add headers, deny paths, and a no-op for measuring overhead."""

from __future__ import annotations

from pydantic import Field

from envoykit import EmptyConfig, FilterConfig, HttpFilter, NoState, Reply, Request, Response

__all__ = ["AddHeaders", "AddHeadersConfig", "DenyPaths", "DenyPathsConfig", "NoOp"]


class AddHeadersConfig(FilterConfig):
    #: Set on the request before the upstream sees it (replacing any value the client sent).
    request: dict[str, str] = Field(default_factory=dict)
    #: Set on the response before the client sees it.
    response: dict[str, str] = Field(default_factory=dict)


class AddHeaders(HttpFilter[AddHeadersConfig, NoState]):
    """Set fixed request and/or response headers."""

    name = "add-headers"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._request = tuple(self.config.request.items())
        self._response = tuple(self.config.response.items())

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        for name, value in self._request:
            request.headers.set(name, value)
        return None

    def on_response_headers(self, response: Response, state: NoState) -> Reply | None:
        for name, value in self._response:
            response.headers.set(name, value)
        return None


class DenyPathsConfig(FilterConfig):
    #: Path prefixes to refuse (matched against the path without its query string).
    prefixes: tuple[str, ...] = Field(min_length=1)
    status: int = Field(403, ge=400, le=599)
    body: str = "forbidden\n"


class DenyPaths(HttpFilter[DenyPathsConfig, NoState]):
    """Answer matching paths locally (e.g. keep ``/admin`` off the internet)."""

    name = "deny-paths"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._denied = self.metrics.counter("denied")

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        path = request.path_only
        if path.startswith(self.config.prefixes):
            request.metadata["denied"] = path
            self._denied.inc()
            return Reply(self.config.status, self.config.body, details="envoykit_deny_paths")
        return None


class NoOp(HttpFilter[EmptyConfig, NoState]):
    """Looks at request and response headers and changes nothing: the overhead baseline."""

    name = "noop"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        return None

    def on_response_headers(self, response: Response, state: NoState) -> Reply | None:
        return None
