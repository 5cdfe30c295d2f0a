"""An in-process gRPC upstream for the Harness: it decodes the framed request, runs the
bookstore's method implementation and answers as a gRPC server would (frames + trailers, or
trailers-only on error)."""

from __future__ import annotations

import struct
from typing import Any

import grpc
from google.protobuf import message_factory

from envoykit.testing import Sent, UpstreamResponse

from .bookstore.server import Bookstore, messages_for


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class _Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Abort(code, details)


def _frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class FakeGrpc:
    """Callable upstream for ``Harness(..., upstream=FakeGrpc(descriptor_bytes))``."""

    def __init__(self, descriptor_set: bytes) -> None:
        self.m = messages_for(descriptor_set)
        self.impl = Bookstore(self.m)
        self.seen: list[Any] = []

    def __call__(self, sent: Sent) -> UpstreamResponse:
        path = sent.headers.get(":path") or ""
        if (
            not path.startswith("/bookstore.Bookstore/")
            or sent.headers.get("content-type") != "application/grpc"
        ):
            return UpstreamResponse(415, {"content-type": "text/plain"}, b"not grpc\n")
        method = self.m.service.methods_by_name[path.rsplit("/", 1)[1]]
        cls = message_factory.GetMessageClass(method.input_type)
        requests, body = [], sent.body
        while len(body) >= 5:
            length = int.from_bytes(body[1:5], "big")
            requests.append(cls.FromString(body[5 : 5 + length]))
            body = body[5 + length :]
        self.seen.extend(requests)
        try:
            arg = iter(requests) if method.client_streaming else requests[0]
            result = getattr(self.impl, method.name)(arg, _Context())
            messages = list(result) if method.server_streaming else [result]
        except _Abort as exc:
            code = str(exc.code.value[0])
            return UpstreamResponse(
                200,
                {"content-type": "application/grpc", "grpc-status": code, "grpc-message": exc.details},
                b"",
            )
        body = b"".join(_frame(m.SerializeToString()) for m in messages)
        return UpstreamResponse(
            200, {"content-type": "application/grpc"}, body, trailers={"grpc-status": "0", "grpc-message": ""}
        )
