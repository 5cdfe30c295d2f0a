"""local-ratelimit in the in-process harness, with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from envoykit import Attributes, Chain, ConfigError, HttpFilter, LocalSharedData, NoState, Request
from envoykit.testing import Harness
from envoykit_filters import LocalRateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def limiter(config: dict[str, Any], clock: Clock) -> LocalRateLimit:
    flt = LocalRateLimit(config)
    flt.clock = clock
    flt.shared = LocalSharedData()  # a fresh store per test (the process-wide one outlives tests)
    return flt


def one_rule(**rule: Any) -> dict[str, Any]:
    return {"rules": [{"name": "r", "max_tokens": 3, "fill_interval": 60, **rule}]}


def test_burst_then_429_with_headers_then_refill() -> None:
    clock = Clock()
    h = Harness(limiter(one_rule(tokens_per_fill=1), clock))
    got = [h.request("GET", "/") for _ in range(4)]
    assert [r.status for r in got] == [200, 200, 200, 429]
    assert [r.response.headers.get("ratelimit-remaining") for r in got[:3]] == ["2", "1", "0"]
    refused = got[3]
    assert refused.local_reply and refused.upstream_request is None
    assert refused.response.headers.get("retry-after") == "60"  # one token per 60 s
    assert refused.response.headers.get("ratelimit-limit") == "3"
    assert refused.response.headers.get("ratelimit-remaining") == "0"
    assert refused.response.headers.get("ratelimit-reset") == "60"
    assert h.metric("envoykit.local_ratelimit.limited") == 1
    assert refused.metadata["envoykit.local-ratelimit"] == {"limited": "r"}
    clock.now += 60  # one token back
    assert [h.request("GET", "/").status for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(
    ("key", "a", "b"),
    [
        (
            ["client_ip"],
            {"attributes": Attributes(source_address="10.0.0.1")},
            {"attributes": Attributes(source_address="10.0.0.2")},
        ),
        (["header:x-api-key"], {"headers": {"x-api-key": "k1"}}, {"headers": {"x-api-key": "k2"}}),
        (["method"], {"method": "GET"}, {"method": "POST"}),
        (["path_segments:1"], {"path": "/a/x"}, {"path": "/b/x"}),
    ],
)
def test_each_key_part_gives_separate_buckets(key: list[str], a: dict[str, Any], b: dict[str, Any]) -> None:
    h = Harness(limiter(one_rule(key=key, max_tokens=1), Clock()))

    def send(opts: dict[str, Any]) -> int:
        opts = dict(opts)
        return h.request(opts.pop("method", "GET"), opts.pop("path", "/a/y"), **opts).status

    assert [send(a), send(a), send(b), send(b)] == [200, 429, 200, 429]


def test_path_segments_share_a_bucket_under_one_prefix() -> None:
    h = Harness(limiter(one_rule(key=["path_segments:2"], max_tokens=1), Clock()))
    assert [h.request("GET", p).status for p in ("/api/v1/a", "/api/v1/b?x=1", "/api/v2/a")] == [
        200,
        429,
        200,
    ]


class FakeJwt(HttpFilter):
    name = "jwt"

    def on_request_headers(self, request: Request, state: NoState) -> None:
        sub = request.headers.get("x-sub")
        if sub:
            request.metadata["payload"] = {"sub": sub, "org": {"id": "o1"}}


def test_jwt_claim_from_metadata_and_missing_parts_skip_the_rule() -> None:
    rl = limiter(one_rule(key=["jwt:sub"], max_tokens=1), Clock())
    h = Harness(Chain([FakeJwt(metadata_namespace="envoykit.jwt"), rl]))
    got = [h.request("GET", "/", headers={"x-sub": s}).status for s in ("alice", "alice", "bob")]
    assert got == [200, 429, 200]
    assert [h.request("GET", "/").status for _ in range(3)] == [200] * 3  # no token: rule skipped
    nested = limiter(one_rule(key=["jwt:org.id"], max_tokens=1), Clock())
    h2 = Harness(Chain([FakeJwt(metadata_namespace="envoykit.jwt"), nested]))
    assert [h2.request("GET", "/", headers={"x-sub": s}).status for s in ("a", "b")] == [200, 429]


def test_shadow_mode_counts_but_lets_through() -> None:
    h = Harness(limiter({**one_rule(max_tokens=1), "shadow_mode": True}, Clock()))
    assert [h.request("GET", "/").status for _ in range(3)] == [200, 200, 200]
    assert h.metric("envoykit.local_ratelimit.shadow_limited") == 2
    assert h.metric("envoykit.local_ratelimit.limited") == 0


def test_match_limits_a_rule_to_a_prefix_and_every_rule_must_have_a_token() -> None:
    config = {
        "rules": [
            {"name": "api", "match": {"prefix": "/api"}, "max_tokens": 1, "fill_interval": 60},
            {"name": "all", "max_tokens": 3, "fill_interval": 60},
        ]
    }
    h = Harness(limiter(config, Clock()))
    assert [h.request("GET", p).status for p in ("/api", "/api", "/x", "/x")] == [200, 429, 200, 429]


def test_buckets_are_in_shared_data() -> None:
    clock = Clock()
    first = limiter(one_rule(max_tokens=2), clock)
    second = limiter(one_rule(max_tokens=2), clock)
    second.shared = first.shared  # two workers, one store
    assert [Harness(f).request("GET", "/").status for f in (first, second, first)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("config", "field", "reason"),
    [
        (one_rule(key=["cookie:x"]), "rules[0].key", "is not a key part"),
        (one_rule(max_tokens=0), "rules[0].max_tokens", "greater than or equal to 1"),
        (one_rule(fill_interval=0), "rules[0].fill_interval", "greater than 0"),
        ({"rules": []}, "rules", "at least 1"),
        ({"rules": [one_rule()["rules"][0]] * 2}, "", "rule names must be unique; repeated: r"),
        (one_rule(key=["method", "method"]), "rules[0].key", "distinct"),
    ],
)
def test_bad_config_fails_at_load(config: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        LocalRateLimit(config)
    assert reason in str(info.value)
    if field:
        assert field in str(info.value)
