"""A custom filter for `envoykit demo --wasm`: it runs inside Envoy, compiled to Wasm."""

from __future__ import annotations

from envoykit import FilterConfig, HttpFilter, NoState, Reply, Request, Response


class StampConfig(FilterConfig):
    value: str = "stamped inside Envoy"


class Stamp(HttpFilter[StampConfig, NoState]):
    """Marks requests for the upstream and responses for the client."""

    name = "stamp"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-envoykit-wasm", self.config.value)
        return None

    def on_response_headers(self, response: Response, state: NoState) -> Reply | None:
        response.headers.set("x-envoykit-wasm", "yes")
        return None
