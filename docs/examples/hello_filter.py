"""The example filter from docs/filter-api.md: tag requests, deny a path, tag responses.

Run it through Envoy with ``envoykit demo --config docs/examples/hello_gateway.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from envoykit import FilterConfig, HttpFilter, Reply, Request, Response


class HelloConfig(FilterConfig):
    greeting: str = "hello"
    denied_prefixes: tuple[str, ...] = Field(default=("/admin",))


@dataclass
class HelloState:
    tagged: bool = False


class Hello(HttpFilter[HelloConfig, HelloState]):
    """Adds ``x-greeting`` to requests, refuses denied paths, marks responses it tagged."""

    def on_request_headers(self, request: Request, state: HelloState) -> Reply | None:
        if request.path_only.startswith(self.config.denied_prefixes):
            return Reply(403, "not here\n", details="hello_denied")
        request.headers.set("x-greeting", self.config.greeting)
        request.metadata["greeted"] = True  # printed by the access log
        state.tagged = True
        return None

    def on_response_headers(self, response: Response, state: HelloState) -> Reply | None:
        if state.tagged:
            response.headers.set("x-greeted", "yes")
        return None
