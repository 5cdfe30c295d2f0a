"""waf-log in the in-process harness: every config option, and bad configs at load."""

from __future__ import annotations

import pytest

from envoykit import ConfigError
from envoykit.testing import Harness
from envoykit_filters import WafLog

NS = "envoykit.waf-log"
WAF_HEADERS = [
    ("x-waf-score", "12"),
    ("x-waf-rule", "942100"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-for", "10.0.0.1"),
    ("x-real-ip", "203.0.113.7"),
    ("x-request-id", "req-1"),
    ("authorization", "Bearer secret"),
    ("user-agent", "curl/8"),
]


def run(config: dict | None = None, headers=WAF_HEADERS):
    h = Harness(WafLog, config or {})
    return h, h.request("GET", "/login", headers=headers)


def test_defaults_capture_waf_prefix_and_forwarding_headers():
    h, result = run()
    assert result.metadata[NS] == {
        "headers": {
            "x-waf-score": "12",
            "x-waf-rule": "942100",
            "x-forwarded-for": "203.0.113.7, 10.0.0.1",  # repeated lines joined, in order
            "x-real-ip": "203.0.113.7",
            "x-request-id": "req-1",
        }
    }
    assert h.metric("envoykit.waf_log.captured") == 5
    # Captured, not removed: the upstream still sees them by default.
    assert result.upstream_request.headers["x-waf-score"] == "12"


def test_nothing_matching_writes_no_metadata():
    h, result = run(headers=[("user-agent", "curl/8")])
    assert NS not in result.metadata
    assert h.metric("envoykit.waf_log.captured") == 0


def test_exact_names_and_prefixes_are_configurable_and_case_insensitive():
    _, result = run({"headers": ["User-Agent"], "prefixes": ["X-Waf-R"]})
    assert result.metadata[NS]["headers"] == {"x-waf-rule": "942100", "user-agent": "curl/8"}


def test_secrets_are_redacted_by_default():
    headers = [("authorization", "Bearer s"), ("cookie", "sid=1"), ("proxy-authorization", "Basic x")]
    _, result = run({"headers": ["authorization", "cookie", "proxy-authorization"], "prefixes": []}, headers)
    assert result.metadata[NS]["headers"] == {
        "authorization": "[redacted]",
        "cookie": "[redacted]",
        "proxy-authorization": "[redacted]",
    }
    assert result.upstream_request.headers["authorization"] == "Bearer s"  # logging never changes it


def test_redaction_list_and_marker_are_configurable():
    config = {
        "prefixes": ["x-waf-"],
        "headers": ["authorization"],
        "redact": ["x-waf-rule"],
        "redacted_value": "***",
    }
    _, result = run(config)
    assert result.metadata[NS]["headers"] == {
        "x-waf-score": "12",
        "x-waf-rule": "***",
        "authorization": "Bearer secret",
    }


def test_long_values_are_truncated_with_a_marker_and_counted():
    h, result = run({"max_value_length": 4, "truncation_marker": "~"})
    captured = result.metadata[NS]
    assert captured["headers"]["x-waf-rule"] == "9421~"
    assert captured["headers"]["x-waf-score"] == "12"
    assert captured["headers"]["x-forwarded-for"] == "203.~"
    assert captured["truncated"] == 4  # rule, xff, real-ip, request-id
    assert h.metric("envoykit.waf_log.truncated") == 4


def test_redacted_values_are_never_truncated():
    _, result = run({"headers": ["authorization"], "max_value_length": 2})
    assert result.metadata[NS]["headers"]["authorization"] == "[redacted]"


def test_default_truncation_marker():
    _, result = run({"headers": [], "prefixes": ["x-waf-"]}, [("x-waf-sig", "a" * 300)])
    assert result.metadata[NS]["headers"]["x-waf-sig"] == "a" * 256 + "...[truncated]"


def test_header_count_is_capped_and_the_rest_counted_as_dropped():
    headers = [(f"x-waf-h{i}", str(i)) for i in range(10)]
    h, result = run({"max_headers": 3}, headers)
    assert result.metadata[NS]["headers"] == {"x-waf-h0": "0", "x-waf-h1": "1", "x-waf-h2": "2"}
    assert result.metadata[NS]["dropped"] == 7
    assert h.metric("envoykit.waf_log.captured") == 3
    assert h.metric("envoykit.waf_log.dropped") == 7


def test_strip_removes_every_matching_header_before_the_upstream():
    headers = [*WAF_HEADERS, *((f"x-waf-h{i}", str(i)) for i in range(5))]
    _, result = run({"strip": True, "max_headers": 2}, headers)
    seen = result.upstream_request.headers
    assert not any(k.startswith("x-waf-") for k, _ in seen.items())  # dropped ones too
    assert "x-forwarded-for" not in seen and "x-real-ip" not in seen
    assert seen["user-agent"] == "curl/8" and seen["authorization"] == "Bearer secret"
    assert len(result.metadata[NS]["headers"]) == 2


@pytest.mark.parametrize(
    ("config", "where", "reason"),
    [
        ({"headers": [], "prefixes": []}, "", "at least one of headers or prefixes"),
        ({"headers": ["bad name"]}, "headers", "not a valid header name"),
        ({"prefixes": [":auth"]}, "prefixes", "pseudo-headers"),
        ({"redact": ["a b"]}, "redact", "not a valid header name"),
        ({"redacted_value": "x\r\ny"}, "redacted_value", "CR, LF or NUL"),
        ({"truncation_marker": "\0"}, "truncation_marker", "CR, LF or NUL"),
        ({"max_headers": 0}, "max_headers", "greater than or equal to 1"),
        ({"max_value_length": 0}, "max_value_length", "greater than or equal to 1"),
        ({"max_value_length": "long"}, "max_value_length", "integer"),
        ({"strip": "maybe"}, "strip", "boolean"),
        ({"header": ["x"]}, "header", "unknown field"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(config, where, reason):
    with pytest.raises(ConfigError) as info:
        WafLog(config)
    message = str(info.value)
    assert reason in message
    if where:
        assert where in message
