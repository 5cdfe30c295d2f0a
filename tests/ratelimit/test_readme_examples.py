"""envoyproxy/ratelimit's README examples (its config files, unchanged, in ``readme/``) give the
decisions its README states, asked over the real gRPC API. The clock is frozen mid-second so
per-second windows cannot roll over during a test."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from envoykit.ratelimit import MAX_UINT32

README = Path(__file__).with_name("readme")
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
NOW = 1_700_000_000.25


@pytest.fixture
def rls(tmp_path: Path, rls_factory: Any, rls_client: Any) -> Any:
    config = tmp_path / "config"
    shutil.copytree(README, config)
    (config / "example4.yaml").unlink()  # example 4 has two variants: see its own test
    server = rls_factory(config, clock=lambda: NOW)
    client = rls_client(server.address)
    client.server = server
    return client


def codes(response: Any) -> list[int]:
    return [s.code for s in response.statuses]


def test_example1_simple_limit(rls: Any) -> None:
    answer = rls.ask("mongo_cps", [[("database", "users")]])
    assert answer.overall_code == OK
    status = answer.statuses[0]
    assert status.current_limit.requests_per_unit == 500
    assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.SECOND
    assert status.limit_remaining == 499
    assert status.duration_until_reset.seconds == 1


def test_example2_nested_descriptors_and_multiple_descriptors(rls: Any) -> None:
    both = [[("message_type", "marketing"), ("to_number", "2061111111")], [("to_number", "2061111111")]]
    for i in range(5):
        answer = rls.ask("messaging", both)
        assert answer.overall_code == OK and codes(answer) == [OK, OK], i
    assert [s.limit_remaining for s in answer.statuses] == [0, 95]
    sixth = rls.ask("messaging", both)
    # A logical OR: the marketing limit (5/day) is over, the per-number limit (100/day) is not.
    assert sixth.overall_code == OVER and codes(sixth) == [OVER, OK]
    # Each number gets its own 5 marketing messages.
    other = rls.ask("messaging", [[("message_type", "marketing"), ("to_number", "2062222222")]])
    assert other.overall_code == OK and other.statuses[0].limit_remaining == 4


def test_example3_most_specific_match_first(rls: Any) -> None:
    for _ in range(10):
        assert rls.ask("edge_proxy_per_ip", [[("remote_address", "50.0.0.1")]]).overall_code == OK
    assert rls.ask("edge_proxy_per_ip", [[("remote_address", "50.0.0.1")]]).overall_code == OVER
    # Another IP has its own 10; the black-listed one (limit 0) is refused at once.
    assert rls.ask("edge_proxy_per_ip", [[("remote_address", "50.0.0.2")]]).overall_code == OK
    banned = rls.ask("edge_proxy_per_ip", [[("remote_address", "50.0.0.5")]])
    assert banned.overall_code == OVER and banned.statuses[0].current_limit.requests_per_unit == 0


def test_example4_levels_must_match(tmp_path: Path, rls_factory: Any, rls_client: Any) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "example4.yaml").write_text((README / "example4.yaml").read_text())
    server = rls_factory(config, clock=lambda: NOW)
    client = rls_client(server.address)
    two_levels = [[("key", "value"), ("subkey", "subvalue")]]
    answer = client.ask("example4", two_levels)
    assert answer.overall_code == OK and not answer.statuses[0].HasField("current_limit")
    # The README's second variant, hot-reloaded: now the two-entry descriptor matches.
    (config / "example4.yaml").write_text(
        "domain: example4\ndescriptors:\n  - key: key\n    value: value\n    descriptors:\n"
        "      - key: subkey\n        rate_limit:\n          requests_per_unit: 300\n          unit: second\n"
    )
    from envoykit.testing._net import wait_for

    wait_for(lambda: client.ask("example4", two_levels).statuses[0].HasField("current_limit"), what="reload")
    assert client.ask("example4", two_levels).statuses[0].current_limit.requests_per_unit == 300


def test_example5_unlimited(rls: Any) -> None:
    answer = rls.ask("internal", [[("ldap", "anything")]])
    assert answer.overall_code == OK
    assert answer.statuses[0].limit_remaining == MAX_UINT32
    assert not answer.statuses[0].HasField("current_limit")
    assert rls.ask("internal", [[("azure", "x")]]).statuses[0].current_limit.requests_per_unit == 100


def test_example6_shadow_mode(rls: Any) -> None:
    user_a = [[("service", "auth-service"), ("user", "user-a")]]
    for _ in range(15):
        assert rls.ask("example6", user_a).overall_code == OK  # never limited
    user_b = [[("service", "auth-service"), ("user", "user-b")]]
    results = [rls.ask("example6", user_b).overall_code for _ in range(21)]
    assert results == [OK] * 20 + [OVER]
    stats = rls.server.server.limiter.stats
    assert stats.get("example6.service.user_user-a", "shadow_mode") == 5
    assert stats.get("example6.service.user_user-a", "over_limit") == 5


def test_example7_replaces(rls: Any) -> None:
    first = [("key_1", "value_1"), ("user", "bkthomps")]
    second = [("key_2", "value_2"), ("user", "bkthomps")]
    for _ in range(10):
        answer = rls.ask("example7", [first, second])
        assert answer.overall_code == OK
        assert not answer.statuses[0].HasField("current_limit")  # replaced: not evaluated
        assert answer.statuses[1].current_limit.requests_per_unit == 10
    assert rls.ask("example7", [first, second]).overall_code == OVER
    # The replaced 5/sec limit was not changed by those 11 requests.
    alone = [rls.ask("example7", [first]).overall_code for _ in range(6)]
    assert alone == [OK] * 5 + [OVER]


def test_example8_detailed_metric(rls: Any) -> None:
    for value in ("unspecified_value", "unspecified_value2", "value1"):
        assert rls.ask("example8", [[("key1", value)]]).overall_code == OK
    stats = rls.server.server.limiter.stats
    assert set(stats.by_key) == {
        "example8.key1_unspecified_value",
        "example8.key1_unspecified_value2",
        "example8.key1_value1",
    }
    assert rls.ask("example8", [[("key1", "value1")]]).statuses[0].current_limit.requests_per_unit == 20


def test_example9_wildcard(rls: Any) -> None:
    for value in ("value_1", "value_2"):
        answer = rls.ask("example9", [[("key1", value)]])
        assert answer.statuses[0].current_limit.requests_per_unit == 20
        assert answer.statuses[0].limit_remaining == 19  # each value has its own counter
    assert not rls.ask("example9", [[("key1", "other")]]).statuses[0].HasField("current_limit")


def test_response_carries_ratelimit_headers(rls: Any) -> None:
    for _ in range(10):
        rls.ask("edge_proxy_per_ip", [[("remote_address", "9.9.9.9")]])
    over = rls.ask("edge_proxy_per_ip", [[("remote_address", "9.9.9.9")]])
    headers = {h.key: h.value for h in over.response_headers_to_add}
    assert headers == {
        "ratelimit-limit": "10",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "1",
        "retry-after": "1",
    }


def test_unknown_domain_is_ok_without_limit(rls: Any) -> None:
    answer = rls.ask("nope", [[("a", "b")]])
    assert answer.overall_code == OK and codes(answer) == [OK]
