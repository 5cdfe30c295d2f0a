"""egress-allowlist in the in-process harness: hosts, ports, wildcards, the 502, metadata, bad configs."""

from __future__ import annotations

import pytest

from envoykit import Chain, ConfigError, FilterConfig, HttpFilter, NoState, Reply, Request
from envoykit.testing import Harness
from envoykit_filters import EgressAllowlist

HOSTS = ["api.github.com", "pypi.org:443", "*.googleapis.com", "*.internal.example:8443", "10.0.0.5:9000"]


class SchemeConfig(FilterConfig):
    scheme: str = "https"


class SetScheme(HttpFilter[SchemeConfig, NoState]):
    """The harness always sends http; this plays the client's scheme."""

    name = "set-scheme"

    def on_request_headers(self, request: Request, state: NoState) -> Reply | None:
        request.headers.set(":scheme", self.config.scheme)
        return None


def status(authority: str, scheme: str = "https") -> int:
    h = Harness(Chain([SetScheme({"scheme": scheme}), EgressAllowlist({"hosts": HOSTS})]))
    return h.request("GET", "/", authority=authority).status


@pytest.mark.parametrize(
    ("authority", "scheme", "expected"),
    [
        ("api.github.com", "https", 200),
        ("API.GitHub.com:8080", "http", 200),  # no port listed: any port, case-insensitive
        ("api.github.com.", "https", 200),  # trailing dot
        ("github.com", "https", 502),
        ("pypi.org", "https", 200),  # default port of the scheme
        ("pypi.org:443", "http", 200),
        ("pypi.org", "http", 502),  # port 80
        ("storage.googleapis.com", "https", 200),
        ("a.b.googleapis.com", "https", 200),
        ("googleapis.com", "https", 502),  # *.domain is subdomains only
        ("evilgoogleapis.com", "https", 502),
        ("svc.internal.example:8443", "http", 200),
        ("svc.internal.example", "https", 502),
        ("10.0.0.5:9000", "http", 200),
        ("10.0.0.5", "http", 502),
        ("", "https", 502),
    ],
)
def test_hosts(authority: str, scheme: str, expected: int) -> None:
    assert status(authority, scheme) == expected


def test_blocked_request_gets_a_clear_502_and_metadata() -> None:
    h = Harness(EgressAllowlist, {"hosts": ["api.github.com"]})
    got = h.request("GET", "/x", authority="evil.example:443")
    assert got.local_reply and got.status == 502
    assert (
        got.response.body
        == b"egress to evil.example:443 is not allowed: the host is not in the egress allowlist\n"
    )
    assert got.metadata["envoykit.egress-allowlist"] == {"blocked_host": "evil.example:443"}
    assert got.upstream_request is None
    h.request("GET", "/", authority="api.github.com")
    assert h.metric("envoykit.egress_allowlist.blocked") == 1
    assert h.metric("envoykit.egress_allowlist.allowed") == 1


def test_custom_status_and_body() -> None:
    h = Harness(EgressAllowlist, {"hosts": ["a.test"], "status": 403, "body": "no egress to {host}"})
    got = h.request("GET", "/", authority="b.test")
    assert got.status == 403 and got.response.body == b"no egress to b.test"


@pytest.mark.parametrize(
    "hosts",
    [[], ["https://api.github.com"], ["api.github.com:http"], ["*"], ["a.*.com"], ["a.test:70000"], ["a b"]],
)
def test_bad_hosts_fail_at_load(hosts: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        EgressAllowlist({"hosts": hosts})
    assert "hosts" in str(info.value)
