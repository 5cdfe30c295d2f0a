"""The sidecar's native h2 server model (``server_model="h2"``) at the protocol level: grpcio's
client talking to it directly, clients that cancel or half-close early, unknown chains, many
concurrent streams over few connections, framing errors answered in C, graceful stop, and the
load-time refusal of async hooks; ext_proc and gRPC ext_authz on one port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc.aio import EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit import Chain, ConfigError, EmptyConfig, HttpFilter, NoState, Reply, Request, Response
from envoykit.extauthz import ext_authz_service
from envoykit.extproc import ExtProcService, SidecarServer, SidecarThread
from envoykit.testing._net import wait_for

from . import support
from .support import pb_grpc, request_headers, response_headers, run, serve

pytestmark = pytest.mark.timeout(60)
METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


@pytest.fixture(autouse=True)
def server_model() -> Iterator[str]:
    """This file is about h2 only (overrides the aio/h2 parametrization of conftest)."""
    support.SERVER_MODEL[0] = "h2"
    yield "h2"
    support.SERVER_MODEL[0] = "aio"


class Tag(HttpFilter[EmptyConfig, NoState]):
    """Request and response headers: one header each way."""

    def on_request_headers(self, request: Request, state: Any) -> None:
        request.headers.set("x-tag", request.headers.get(":path") or "")

    def on_response_headers(self, response: Response, state: Any) -> None:
        response.headers.set("x-seen", "yes")


class Sleepy(HttpFilter[EmptyConfig, NoState]):
    async def on_request_headers(self, request: Request, state: Any) -> None:
        await asyncio.sleep(0)


def chain() -> Chain:
    return Chain([Tag()], name="tag")


def path_headers(path: str) -> Any:
    return request_headers([(":method", "GET"), (":path", path), (":authority", "x"), (":scheme", "http")])


def set_headers(response: Any, kind: str) -> dict[str, bytes]:
    return {
        o.header.key: o.header.raw_value for o in getattr(response, kind).response.header_mutation.set_headers
    }


def stats(server: SidecarServer) -> dict[str, int]:
    return server._server.stats()  # type: ignore[union-attr]


def drained(server: SidecarServer) -> bool:
    s = stats(server)
    return s["streams"] == 0 and not server.services[0]._h2_streams  # type: ignore[attr-defined]


# -- grpcio's client, directly ------------------------------------------------------------------


def test_grpcio_client_full_stream_and_health() -> None:
    with (
        SidecarThread({"tag": chain()}, server_model="h2") as sidecar,
        grpc.insecure_channel(sidecar.address) as channel,
    ):
        answers = list(
            pb_grpc.ExternalProcessorStub(channel).Process(
                iter([path_headers("/a"), response_headers(eos=False)]), timeout=10
            )
        )
        assert [a.WhichOneof("response") for a in answers] == ["request_headers", "response_headers"]
        assert set_headers(answers[0], "request_headers") == {"x-tag": b"/a"}
        assert set_headers(answers[1], "response_headers") == {"x-seen": b"yes"}
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1  # SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as watch:
            next(iter(health.Watch(health_pb2.HealthCheckRequest(), timeout=5)))
        assert watch.value.code() == grpc.StatusCode.UNIMPLEMENTED  # answered in C
        channel.close()
        wait_for(lambda: drained(sidecar.server), timeout=10, what="streams forgotten")


def test_half_close_early_ends_the_stream_ok() -> None:
    """Envoy (or any client) done sending before the chain's last phase: answered, then OK."""

    async def body() -> tuple[Any, Any, grpc.StatusCode]:
        async with serve(chain()) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = pb_grpc.ExternalProcessorStub(channel).Process(timeout=10)
                await call.write(path_headers("/early"))
                first = await call.read()
                await call.done_writing()
                end = await call.read()
                code = await call.code()
            await asyncio.to_thread(wait_for, lambda: drained(server), 10, what="streams forgotten")
            return first, end, code

    first, end, code = run(body())
    assert set_headers(first, "request_headers") == {"x-tag": b"/early"}
    assert end is EOF
    assert code == grpc.StatusCode.OK


def test_unknown_chain_gets_the_500_and_the_stream_ends() -> None:
    async def body() -> tuple[Any, Any, grpc.StatusCode, float]:
        async with serve({"tag": chain(), "other": Chain([], name="other")}) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                call = pb_grpc.ExternalProcessorStub(channel).Process(
                    metadata=(("x-envoykit-chain", "nope"),), timeout=10
                )
                await call.write(path_headers("/"))
                answer = await call.read()
                end = await call.read()
                code = await call.code()
            return (
                answer,
                end,
                code,
                server.metrics.value("envoykit_stream_errors_total", reason="unknown_chain"),
            )

    answer, end, code, errors = run(body())
    assert answer.immediate_response.status.code == 500
    assert answer.immediate_response.details == "envoykit_unknown_chain"
    assert (end, code, errors) == (EOF, grpc.StatusCode.OK, 1.0)


def test_chain_named_by_metadata() -> None:
    async def body() -> Any:
        async with (
            serve({"tag": chain(), "other": Chain([], name="other")}) as server,
            grpc.aio.insecure_channel(server.address) as channel,
        ):
            call = pb_grpc.ExternalProcessorStub(channel).Process(
                metadata=(("x-envoykit-chain", "tag"),), timeout=10
            )
            await call.write(path_headers("/m"))
            answer = await call.read()
            call.cancel()
            return answer

    assert set_headers(run(body()), "request_headers") == {"x-tag": b"/m"}


def test_client_cancelling_mid_stream_frees_it_and_the_server_goes_on() -> None:
    async def body() -> tuple[dict[str, int], Any]:
        async with serve(chain()) as server:
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = pb_grpc.ExternalProcessorStub(channel)
                for _ in range(20):
                    call = stub.Process(timeout=10)
                    await call.write(path_headers("/c"))
                    await call.read()
                    call.cancel()  # Envoy's RST_STREAM when the downstream request goes away
                await asyncio.to_thread(wait_for, lambda: drained(server), 10, what="cancelled streams freed")
                after = list(await asyncio.wait_for(_one_stream(stub, "/after"), 10))
            return stats(server), after

    s, after = run(body())
    assert s["streams"] == 0
    assert set_headers(after[0], "request_headers") == {"x-tag": b"/after"}


async def _one_stream(stub: Any, path: str) -> list[Any]:
    call = stub.Process(timeout=10)
    out = []
    for message in (path_headers(path), response_headers()):
        await call.write(message)
        out.append(await call.read())
    assert await call.read() is EOF  # the chain's last phase (response headers) ends the stream
    assert await call.code() == grpc.StatusCode.OK
    return out


def test_many_concurrent_streams_over_few_connections() -> None:
    """400 streams at once over 2 connections: each gets its own answers, nothing leaks."""

    async def body() -> tuple[list[list[Any]], dict[str, int]]:
        async with serve(chain()) as server:
            channels = [
                grpc.aio.insecure_channel(server.address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(2)
            ]
            try:
                stubs = [pb_grpc.ExternalProcessorStub(c) for c in channels]
                results = await asyncio.gather(*(_one_stream(stubs[i % 2], f"/s{i}") for i in range(400)))
            finally:
                for c in channels:
                    await c.close()
            await asyncio.to_thread(wait_for, lambda: drained(server), 10, what="streams forgotten")
            return results, stats(server)

    results, s = run(body(), timeout=60)
    assert [set_headers(r[0], "request_headers")["x-tag"] for r in results] == [
        f"/s{i}".encode() for i in range(400)
    ]
    assert all(set_headers(r[1], "response_headers") == {"x-seen": b"yes"} for r in results)
    assert s["accepted"] <= 4 and s["streams"] == 0 and s["stream_batches"] < s["stream_events"]


# -- framing errors, answered in C -----------------------------------------------------------


def _curl_headers(address: str, body: bytes, tmp_path: Path) -> str:
    """POST one gRPC stream whose request body is ``body``; the response headers (a
    trailers-only answer carries grpc-status there)."""
    (tmp_path / "body").write_bytes(body)
    return subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-H", "content-type: application/grpc", "--data-binary",
         f"@{tmp_path / 'body'}", "-D", "-", "-o", "/dev/null", f"http://{address}{METHOD}"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip


def _message(body: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x00\x7f\xff\xff\xff", "grpc-status: 8"),  # declared > max message: RESOURCE_EXHAUSTED
        (_message(b"x", flag=1), "grpc-status: 12"),  # compressed: UNIMPLEMENTED
        (_message(request_headers().SerializeToString())[:-3], "grpc-status: 13"),  # ends mid-message
    ],
    ids=["oversized", "compressed", "truncated"],
)
def test_framing_errors_are_answered_in_c(data: bytes, status: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with SidecarThread({"tag": chain()}, server_model="h2", max_message_bytes=1024) as sidecar:
        headers = _curl_headers(sidecar.address, data, tmp_path)
        assert status in headers, headers
        wait_for(lambda: drained(sidecar.server), timeout=10, what="stream forgotten")
        with grpc.insecure_channel(sidecar.address) as channel:  # the server goes on
            answers = list(
                pb_grpc.ExternalProcessorStub(channel).Process(iter([path_headers("/ok")]), timeout=10)
            )
        assert set_headers(answers[0], "request_headers") == {"x-tag": b"/ok"}


def test_graceful_stop_finishes_the_stream_in_flight() -> None:
    sidecar = SidecarThread({"tag": chain()}, server_model="h2", stop_grace=10.0).start()
    channel = grpc.insecure_channel(sidecar.address)
    requests: list[Any] = [path_headers("/g")]
    more = threading.Event()

    def messages() -> Any:
        yield requests[0]
        assert more.wait(10)
        yield response_headers()

    call = pb_grpc.ExternalProcessorStub(channel).Process(messages(), timeout=20)
    first = next(call)
    stopper = threading.Thread(target=sidecar.stop)
    stopper.start()
    wait_for(lambda: not sidecar.server.health.serving, timeout=10, what="NOT_SERVING")
    more.set()
    rest = list(call)
    stopper.join(20)
    channel.close()
    assert set_headers(first, "request_headers") == {"x-tag": b"/g"}
    assert [a.WhichOneof("response") for a in rest] == ["response_headers"]
    assert not stopper.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sidecar.port), timeout=2).close()


def test_second_stop_cancels_what_is_still_draining() -> None:
    async def body() -> grpc.StatusCode:
        server = SidecarServer({"tag": chain()}, address="127.0.0.1:0", server_model="h2")
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = pb_grpc.ExternalProcessorStub(channel).Process(timeout=30)
            await call.write(path_headers("/held"))
            await call.read()  # the stream stays open: the chain still wants response headers
            draining = asyncio.ensure_future(server.stop(30.0))
            await asyncio.to_thread(wait_for, lambda: not server.health.serving, 10, what="NOT_SERVING")
            await asyncio.wait_for(server.stop(None), 10)  # hurries the 30 s drain
            await asyncio.wait_for(draining, 10)
            return await call.code()

    assert run(body()) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)


# -- refused at load ---------------------------------------------------------------------------


def test_async_hooks_are_refused_at_load() -> None:
    with pytest.raises(ConfigError) as error:
        SidecarServer({"slow": Chain([Sleepy()], name="slow")}, server_model="h2")
    message = str(error.value)
    assert "sidecar.server" in message and "'slow'" in message and "on_request_headers" in message
    assert "async" in message


def test_ext_proc_and_grpc_ext_authz_on_one_h2_port() -> None:
    """One h2 sidecar serves ext_proc streams and ext_authz checks (chain named by metadata)."""
    from envoy.config.core.v3 import address_pb2
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    class Deny(HttpFilter[EmptyConfig, NoState]):
        def on_request_headers(self, request: Request, state: Any) -> Any:
            return Reply(403, "no\n")

    chains = {"tag": chain(), "deny": Chain([Deny()], name="deny")}
    sidecar = SidecarThread(chains, server_model="h2", services=[ExtProcService, ext_authz_service()])
    with sidecar as started, grpc.insecure_channel(started.address) as channel:
        answers = list(
            pb_grpc.ExternalProcessorStub(channel).Process(
                iter([path_headers("/both")]), metadata=(("x-envoykit-chain", "tag"),), timeout=10
            )
        )
        check = external_auth_pb2.CheckRequest()
        check.attributes.request.http.method = "GET"
        check.attributes.request.http.path = "/x"
        check.attributes.source.address.CopyFrom(
            address_pb2.Address(socket_address=address_pb2.SocketAddress(address="1.2.3.4"))
        )
        authz = external_auth_pb2_grpc.AuthorizationStub(channel)
        denied = authz.Check(check, metadata=(("x-envoykit-chain", "deny"),), timeout=10)
        unknown = authz.Check(check, metadata=(("x-envoykit-chain", "nope"),), timeout=10)
    assert set_headers(answers[0], "request_headers") == {"x-tag": b"/both"}
    assert denied.denied_response.status.code == 403 and denied.denied_response.body == "no\n"
    assert unknown.denied_response.status.code == 500


def test_missing_toolchain_fails_at_start_with_the_build_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from envoykit.runtime import _h2

    def no_zig() -> list[str]:
        raise _h2.H2BuildError("building the h2 server needs the `ziglang` package: pip install ziglang")

    monkeypatch.setattr(_h2, "_module", None)
    monkeypatch.setattr(_h2, "_zig", no_zig)
    monkeypatch.setenv("ENVOYKIT_CACHE", "/nonexistent-envoykit-cache")
    with pytest.raises(_h2.H2BuildError, match="ziglang"):
        SidecarThread({"tag": chain()}, server_model="h2").start()


def test_cli_serve_refuses_async_hooks_on_h2(tmp_path: Path) -> None:
    module = tmp_path / "slowfilters.py"
    module.write_text(
        "from envoykit import EmptyConfig, HttpFilter, NoState\n"
        "class Slow(HttpFilter[EmptyConfig, NoState]):\n"
        "    name = 'slow'\n"
        "    async def on_request_headers(self, request, state):\n"
        "        return None\n"
    )
    gateway = tmp_path / "gateway.yaml"
    gateway.write_text(
        "sidecar: {address: '127.0.0.1:0', metrics_address: '', server: h2}\n"
        "upstreams: {echo: {url: 'http://127.0.0.1:9'}}\n"
        "chains: {default: [{filter: 'slowfilters:Slow'}]}\n"
        "routes: [{prefix: /, upstream: echo, chain: default}]\n"
    )
    envoykit = str(Path(sys.executable).with_name("envoykit"))
    done = subprocess.run(
        [envoykit, "serve", str(gateway)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "async hooks" in done.stderr and "sidecar.server" in done.stderr
