"""Filters for the portability matrix: one uses every hook, one raises on demand.

Compiled into a Wasm module by the tests and run in the sidecar from the same classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoykit import FilterConfig, HttpFilter, NoState, Reply, Request, Response


class EveryHookConfig(FilterConfig):
    tag: str = "every"


@dataclass
class Seen:
    request_body_bytes: int = 0


class EveryHook(HttpFilter[EveryHookConfig, Seen]):
    """Touches each phase in a way the client or the upstream can see."""

    name = "every-hook"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.requests = self.metrics.counter("requests")
        self.body_bytes = self.metrics.histogram("request_body_bytes")

    def on_request_headers(self, request: Request, state: Seen) -> Reply | None:
        self.requests.inc()
        if request.path_only == "/deny":
            return Reply(451, "unavailable\n", {"x-reason": "legal"})
        request.headers.set("x-tag", self.config.tag)
        request.headers.remove("x-drop-me")
        return None

    def on_request_body(self, request: Request, state: Seen) -> None:
        state.request_body_bytes = len(request.body)
        self.body_bytes.record(len(request.body))
        request.body = request.body.upper() + b"|" + self.config.tag.encode()

    def on_request_trailers(self, request: Request, state: Seen) -> None:
        request.trailers.set("x-body-bytes", str(state.request_body_bytes))

    def on_response_headers(self, response: Response, state: Seen) -> None:
        response.headers.set("x-upstream-status", str(response.status))
        response.headers.set("x-request-body-bytes", str(state.request_body_bytes))

    def on_response_body(self, response: Response, state: Seen) -> None:
        response.body = b"[" + response.body + b"]"

    def on_response_trailers(self, response: Response, state: Seen) -> None:
        response.trailers.remove("x-secret")


class Explode(HttpFilter):
    """Raises on /explode: shows the configured failure mode."""

    name = "explode"

    def on_request_headers(self, request: Request, state: NoState) -> None:
        if request.path_only == "/explode":
            request.headers.set("x-half-done", "1")
            raise RuntimeError("boom")


class Visits(HttpFilter):
    """Counts requests in shared data with compare-and-swap (all Envoy workers share it)."""

    name = "visits"

    def on_request_headers(self, request: Request, state: NoState) -> None:
        key = "visits:" + request.headers.get("x-counter", "default")
        while True:
            value, cas = self.shared.get(key)
            count = int(value or b"0") + 1
            if self.shared.set(key, str(count).encode(), cas):
                break
        request.headers.set("x-visit", str(count))


class EchoPath(HttpFilter):
    """Copies the request's path into a response header: response hooks see the request as it left
    the request phase, even when no request hook read its headers."""

    name = "echo-path"

    def on_response_headers(self, response: Response, state: NoState) -> None:
        response.headers.set("x-request-path", response.request.path)


class Exit(HttpFilter):
    """Raises SystemExit on /exit: a filter bug that must not end the VM (Envoy's worker keeps it)."""

    name = "exit"

    def on_request_headers(self, request: Request, state: NoState) -> None:
        if request.path_only == "/exit":
            raise SystemExit("bye")


class KeepFirst(HttpFilter):
    """Keeps the first request it sees and tags each later one with that request's path: a message
    a filter keeps past its callback still has the headers it had (not a later request's)."""

    name = "keep-first"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.first: Request | None = None

    def on_request_headers(self, request: Request, state: NoState) -> None:
        if self.first is None:
            self.first = request  # its headers unread here
        else:
            request.headers.set("x-first-path", self.first.path)


class ExitLate(HttpFilter):
    """SystemExit in on_response_headers on /exit-late (the response goes on), then the body hook
    reads the response's headers, which no hook read before."""

    name = "exit-late"

    def on_response_headers(self, response: Response, state: NoState) -> None:
        if response.request.path_only == "/exit-late":
            raise SystemExit("late")

    def on_response_body(self, response: Response, state: NoState) -> None:
        response.body = response.headers.get("content-type", "none")


class BadState(HttpFilter[EveryHookConfig, Seen]):
    """Its per-request state cannot be made (``new_state`` raises): none of its hooks can run."""

    name = "bad-state"

    def new_state(self) -> Seen:
        raise RuntimeError("no state")

    def on_request_headers(self, request: Request, state: Seen) -> None:
        request.headers.set("x-bad-state", "ran")

    def on_response_headers(self, response: Response, state: Seen) -> None:
        response.headers.set("x-bad-state", "ran")
