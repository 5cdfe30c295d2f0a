"""Which chain runs: gRPC metadata, route metadata, an opt-in header, the default."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from envoykit import Chain, ConfigError, EmptyConfig, HttpFilter, NoState, Request
from envoykit.runtime import ChainRouter

from .support import REQUEST, exchange, mutation_of, request_headers, run, serve, with_attributes

pytestmark = pytest.mark.timeout(30)


class Mark(HttpFilter[EmptyConfig, NoState]):
    """Stamps the chain it ran in."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def on_request_headers(self, request: Request, state: Any) -> None:
        request.headers.set("x-chain", self.label)


def chains() -> dict[str, Chain]:
    return {name: Chain([Mark(name)], name=name) for name in ("public", "admin", "internal")}


def ran(response: Any) -> str | None:
    if response.HasField("immediate_response"):
        return f"status {response.immediate_response.status.code}"
    sets, _ = mutation_of(response.request_headers.response.header_mutation)
    return sets[0][1].decode() if sets else None


ROUTE_META = {"xds.route_metadata": {"filter_metadata": {"envoykit": {"chain": "internal"}}}}


@pytest.mark.parametrize(
    ("metadata", "attributes", "headers", "expected"),
    [
        ([("x-envoykit-chain", "admin")], ROUTE_META, [("x-chain-select", "public")], "admin"),
        ([], ROUTE_META, [("x-chain-select", "admin")], "internal"),
        ([], {}, [("x-chain-select", "admin")], "admin"),
        ([], {}, [], "public"),
        ([("x-envoykit-chain", "nope")], {}, [], "status 500"),
    ],
    ids=["grpc-metadata-first", "route-metadata-next", "header-next", "default-last", "unknown-500"],
)
def test_selection_order(
    metadata: list[tuple[str, str]], attributes: dict[str, Any], headers: list[tuple[str, str]], expected: str
) -> None:
    async def body() -> Any:
        async with serve(chains(), default_chain="public", chain_header="X-Chain-Select") as server:
            message = with_attributes(request_headers([*REQUEST, *headers]), attributes)
            (response,) = await exchange(server.address, [message], metadata=metadata)
            return response

    assert ran(run(body())) == expected


def test_header_ignored_unless_configured() -> None:
    async def body() -> Any:
        async with serve(chains(), default_chain="public") as server:
            (response,) = await exchange(
                server.address, [request_headers([*REQUEST, ("x-chain-select", "admin")])]
            )
            return response

    assert ran(run(body())) == "public"


def test_unknown_chain_is_500_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> tuple[list[Any], float]:
        async with serve(chains(), default_chain="public") as server:
            out = []
            for _ in range(3):
                out += await exchange(
                    server.address, [request_headers()], metadata=[("x-envoykit-chain", "ghost")]
                )
            return out, server.metrics.value("envoykit_stream_errors_total", reason="unknown_chain")

    with caplog.at_level(logging.ERROR, logger="envoykit.extproc"):
        responses, errors = run(body())
    assert {r.immediate_response.status.code for r in responses} == {500}
    assert {r.immediate_response.details for r in responses} == {"envoykit_unknown_chain"}
    assert errors == 3.0
    assert len([r for r in caplog.records if "no chain 'ghost'" in r.getMessage()]) == 1


def test_no_default_with_several_chains_answers_500() -> None:
    async def body() -> Any:
        async with serve(chains()) as server:
            (response,) = await exchange(server.address, [request_headers()])
            return response

    assert ran(run(body())) == "status 500"


def test_single_chain_is_the_default() -> None:
    router = ChainRouter({"only": Chain([], name="only")})
    assert router.default_chain == "only"
    assert router.select()[0] == "only"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(chains={}), "at least one chain"),
        (dict(chains={"a": Chain([])}, default_chain="b"), "default chain 'b'"),
        (dict(chains={"a": object()}), "not an envoykit.Chain"),
    ],
)
def test_router_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ChainRouter(**kwargs)


def test_route_metadata_shapes() -> None:
    router = ChainRouter(chains(), default_chain="public")
    assert router.select(None, {"xds.route_metadata": {"envoykit": {"chain": "admin"}}})[0] == "admin"
    assert router.select(None, {"xds.route_metadata": "garbage"})[0] == "public"
    assert (
        router.select(None, {"xds.route_metadata": {"filter_metadata": {"envoykit": {"chain": 3}}}})[0]
        == "public"
    )
