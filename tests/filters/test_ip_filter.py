"""ip-filter in the in-process harness: allow/deny lists, IPv6, x-forwarded-for hops, per-route
lists, replies, metadata, metrics, and bad configs at load."""

from __future__ import annotations

import pytest

from envoykit import Attributes, ConfigError
from envoykit.testing import Harness
from envoykit_filters import IpFilter


def status(config: dict, source: str = "203.0.113.5", path: str = "/", xff: str | None = None) -> int:
    headers = {"x-forwarded-for": xff} if xff is not None else {}
    result = Harness(IpFilter, config).request(
        "GET", path, headers=headers, attributes=Attributes(source_address=source, source_port=1234)
    )
    return result.status


@pytest.mark.parametrize(
    ("source", "expected"),
    [("10.1.2.3", 200), ("10.9.0.1", 403), ("192.168.1.1", 403), ("2001:db8::7", 200), ("2001:db9::1", 403)],
)
def test_allow_list_with_deny_exceptions(source: str, expected: int) -> None:
    config = {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.9.0.0/16"]}
    assert status(config, source) == expected


def test_empty_allow_list_lets_everything_not_denied_through() -> None:
    assert status({"deny": ["198.51.100.0/24"]}, "203.0.113.1") == 200
    assert status({"deny": ["198.51.100.0/24"]}, "198.51.100.77") == 403
    assert status({}, "198.51.100.77") == 200


def test_deny_wins_over_allow() -> None:
    assert status({"allow": ["10.0.0.1"], "deny": ["10.0.0.1/32"]}, "10.0.0.1") == 403


def test_ipv4_mapped_ipv6_source_matches_ipv4_ranges() -> None:
    assert status({"allow": ["10.0.0.0/8"]}, "::ffff:10.1.1.1") == 200


def test_xff_trusted_hops_take_the_nth_address_from_the_right() -> None:
    config = {"allow": ["198.51.100.0/24"], "xff_num_trusted_hops": 2}
    # client-supplied garbage, the real client, then the proxy nearest to Envoy
    assert status(config, "127.0.0.1", xff="1.2.3.4, 198.51.100.9, 10.0.0.2") == 200
    assert status(config, "127.0.0.1", xff="198.51.100.9, 1.2.3.4, 10.0.0.2") == 403
    # repeated header lines count as one list
    h = Harness(IpFilter, config)
    got = h.request(
        "GET",
        "/",
        headers=[("x-forwarded-for", "198.51.100.9"), ("x-forwarded-for", "10.0.0.2")],
        attributes=Attributes(source_address="127.0.0.1"),
    )
    assert got.status == 200


def test_too_few_xff_entries_fall_back_to_the_source_address() -> None:
    config = {"allow": ["198.51.100.0/24"], "xff_num_trusted_hops": 2}
    assert status(config, "198.51.100.1", xff="203.0.113.1") == 200
    assert status(config, "203.0.113.1") == 403


def test_without_trusted_hops_xff_is_ignored() -> None:
    assert status({"allow": ["198.51.100.0/24"]}, "203.0.113.1", xff="198.51.100.1") == 403


def test_unparseable_client_address_is_denied() -> None:
    assert status({"deny": ["10.0.0.0/8"], "xff_num_trusted_hops": 1}, "127.0.0.1", xff="not-an-ip") == 403


def test_denial_reply_metadata_and_metrics() -> None:
    h = Harness(IpFilter, {"deny": ["10.0.0.0/8"], "status": 451, "body": "blocked\n"})
    got = h.request("GET", "/", attributes=Attributes(source_address="10.0.0.9"))
    assert got.local_reply and got.status == 451 and got.response.body == b"blocked\n"
    assert got.upstream_request is None
    assert got.metadata["envoykit.ip-filter"] == {"client_ip": "10.0.0.9", "reason": "denied"}
    h.request("GET", "/", attributes=Attributes(source_address="10.1.1.1"))
    h.request("GET", "/", attributes=Attributes(source_address="11.1.1.1"))
    assert h.metric("envoykit.ip_filter.denied") == 2
    assert h.metric("envoykit.ip_filter.allowed") == 1


def test_route_overrides_replace_the_lists() -> None:
    config = {
        "allow": ["10.0.0.0/8"],
        "routes": [
            {"match": {"prefix": "/public"}, "allow": []},
            {"match": {"prefix": "/admin"}, "allow": ["10.0.0.1"]},
        ],
    }
    assert status(config, "203.0.113.1", "/public/x") == 200
    assert status(config, "10.0.0.2", "/admin") == 403
    assert status(config, "10.0.0.1", "/admin") == 200
    assert status(config, "10.0.0.2", "/other") == 200


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"allow": ["10.0.0.300/8"]}, "allow"),
        ({"deny": ["nope"]}, "deny"),
        ({"xff_num_trusted_hops": -1}, "xff_num_trusted_hops"),
        ({"status": 200}, "status"),
        ({"routes": [{"match": {"prefix": "/a"}, "deny": ["1.2.3.4/40"]}]}, "routes[0].deny"),
        ({"allowed": ["10.0.0.0/8"]}, "allowed"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(config: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        IpFilter(config)
    assert field in str(info.value)
