"""A request-headers hook may give a bodiless request a body (the gRPC-JSON transcoder turns a
GET into a framed gRPC POST); a request that has a body still only changes it in a body hook."""

from __future__ import annotations

from typing import Any

from envoykit import EmptyConfig, HttpFilter, NoState, Reply, Request
from envoykit.testing import Harness


class MakeBody(HttpFilter[EmptyConfig, NoState]):
    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.body = b"made"
        request.headers.set("content-length", "4")
        return None

    def on_request_body(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set("x-body-hook", "ran")
        return None


def test_a_bodiless_request_gets_the_body_and_body_hooks_do_not_see_it_again() -> None:
    ex = Harness(MakeBody()).request("GET", "/")
    assert ex.upstream_request is not None
    assert ex.upstream_request.body == b"made"
    assert "x-body-hook" not in ex.upstream_request.headers
    assert ex.status == 200


def test_a_request_with_a_body_still_refuses_it() -> None:
    ex = Harness(MakeBody()).request("POST", "/", body=b"client body")
    assert ex.status == 500 and ex.local_reply  # the hook raised FilterDefinitionError: fail closed


def test_the_sidecar_sends_it_as_continue_and_replace() -> None:
    from envoykit import Chain
    from tests.extproc.support import exchange, pb, request_headers, run, serve

    async def go() -> Any:
        async with serve(Chain([MakeBody()], name="default"), default_chain="default") as server:
            return (await exchange(server.address, [request_headers(eos=True)]))[0]

    common = run(go()).request_headers.response
    assert common.status == pb.CommonResponse.CONTINUE_AND_REPLACE
    assert common.body_mutation.body == b"made"
