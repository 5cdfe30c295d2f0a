"""The six points of an HTTP exchange where a filter can act, and how bodies are delivered.

A chain declares what it needs as a ``ProcessingNeeds``; every runtime derives its own plan from
it (the ext_proc ``processing_mode``, which proxy-wasm callbacks pause, what the test host
drives), so phases no filter uses are never sent at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Phase", "BodyMode", "ProcessingNeeds", "REQUEST_PHASES", "RESPONSE_PHASES"]


class Phase(enum.Enum):
    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    REQUEST_TRAILERS = "request_trailers"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_BODY = "response_body"
    RESPONSE_TRAILERS = "response_trailers"

    # Members are singletons: hash by identity in C instead of Enum's Python-level name hash
    # (phases key the chain's plan, looked up on every hook call).
    __hash__ = object.__hash__

    @property
    def hook_name(self) -> str:
        """The ``HttpFilter`` method that handles this phase."""
        return "on_" + self.value

    @property
    def is_request(self) -> bool:
        return self in REQUEST_PHASES


REQUEST_PHASES = (Phase.REQUEST_HEADERS, Phase.REQUEST_BODY, Phase.REQUEST_TRAILERS)
RESPONSE_PHASES = (Phase.RESPONSE_HEADERS, Phase.RESPONSE_BODY, Phase.RESPONSE_TRAILERS)


class BodyMode(enum.Enum):
    """How a body hook receives the body.

    ``BUFFERED``: once, with the whole body (``end_of_stream`` is true); headers can still change.
    ``STREAMED``: once per chunk as it arrives; headers are already on their way and read-only.
    """

    NONE = "none"
    STREAMED = "streamed"
    BUFFERED = "buffered"


@dataclass(frozen=True, slots=True)
class ProcessingNeeds:
    """What a filter or chain needs a runtime to deliver. Combine with ``|``."""

    request_headers: bool = False
    request_body: BodyMode = BodyMode.NONE
    request_trailers: bool = False
    response_headers: bool = False
    response_body: BodyMode = BodyMode.NONE
    response_trailers: bool = False

    def __or__(self, other: ProcessingNeeds) -> ProcessingNeeds:
        return ProcessingNeeds(
            request_headers=self.request_headers or other.request_headers,
            request_body=_merge_body(self.request_body, other.request_body),
            request_trailers=self.request_trailers or other.request_trailers,
            response_headers=self.response_headers or other.response_headers,
            response_body=_merge_body(self.response_body, other.response_body),
            response_trailers=self.response_trailers or other.response_trailers,
        )

    def wants(self, phase: Phase) -> bool:
        value = getattr(self, phase.value)
        return value is not BodyMode.NONE if isinstance(value, BodyMode) else bool(value)

    def envoy_processing_mode(self) -> dict[str, str]:
        """These needs as Envoy's ``ProcessingMode`` (field -> enum name), for config and
        ``mode_override`` alike."""
        return {
            "request_header_mode": "SEND" if self.any else "SKIP",
            "response_header_mode": "SEND" if self.any_response else "SKIP",
            "request_body_mode": self.request_body.name,
            "response_body_mode": self.response_body.name,
            "request_trailer_mode": "SEND" if self.request_trailers else "SKIP",
            "response_trailer_mode": "SEND" if self.response_trailers else "SKIP",
        }

    @property
    def any_response(self) -> bool:
        return any(self.wants(p) for p in RESPONSE_PHASES)

    @property
    def any(self) -> bool:
        return any(self.wants(p) for p in Phase)


def _merge_body(a: BodyMode, b: BodyMode) -> BodyMode:
    """Buffered wins: a streaming filter copes with one big chunk, a buffering one cannot
    cope with pieces."""
    if BodyMode.BUFFERED in (a, b):
        return BodyMode.BUFFERED
    if BodyMode.STREAMED in (a, b):
        return BodyMode.STREAMED
    return BodyMode.NONE
