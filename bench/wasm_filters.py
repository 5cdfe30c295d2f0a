"""The user filter file compiled into the bench's Wasm module (``wasm-noop`` scenario).

The bench configures only the library filter ``noop`` (``envoykit_filters.basic.NoOp``), which
every module carries; this file exists because a build needs a user module. Its filter is the
same no-op: request and response header hooks that continue.
"""

from __future__ import annotations

from envoykit import HttpFilter, Request, Response


class BenchNoOp(HttpFilter):
    """Continues on request and response headers."""

    def on_request_headers(self, request: Request, state: None) -> None:
        return None

    def on_response_headers(self, response: Response, state: None) -> None:
        return None
