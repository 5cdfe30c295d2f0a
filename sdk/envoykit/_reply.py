"""A local reply: the answer a filter gives instead of letting the request go on.

Hooks *return* a ``Reply`` (rather than "send, then pause"), so there is exactly one way to stop a
request and runtimes decide how to deliver it (ext_proc ``ImmediateResponse``, proxy-wasm
``send_local_response``, the test host's result).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._headers import HeaderValue

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True, init=False)
class Reply:
    """Stop here and answer the client with ``status``, ``body`` and ``headers``.

    >>> Reply(403, "forbidden\\n")
    Reply(status=403, body=b'forbidden\\n', headers=(), grpc_status=None, details='')
    >>> Reply.json(429, {"error": "slow down"}, headers={"retry-after": "1"}).headers
    (('retry-after', '1'), ('content-type', 'application/json'))
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, HeaderValue], ...]
    #: gRPC status for gRPC clients (Envoy adds ``grpc-status``); ``None`` for plain HTTP.
    grpc_status: int | None
    #: A short reason Envoy records as the response code details (``%RESPONSE_CODE_DETAILS%``).
    details: str

    def __init__(
        self,
        status: int,
        body: str | bytes = b"",
        headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] = (),
        *,
        grpc_status: int | None = None,
        details: str = "",
    ) -> None:
        if not 200 <= status <= 599:
            raise ValueError(f"local reply status must be 200-599, got {status}")
        pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "body", body.encode() if isinstance(body, str) else bytes(body))
        object.__setattr__(self, "headers", pairs)
        object.__setattr__(self, "grpc_status", grpc_status)
        object.__setattr__(self, "details", details)

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] = (),
        **kwargs: Any,
    ) -> Reply:
        """A reply whose body is ``payload`` as compact JSON."""
        pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers)
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, (*pairs, ("content-type", "application/json")), **kwargs)
