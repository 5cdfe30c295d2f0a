"""Config errors name the file, the path in the document and the reason (one case per error);
the rendered Envoy wiring passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoykit import ConfigError
from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.ratelimit import load_directory, parse_config

BAD = [
    ("descriptors: []\n", "f.yaml: domain: a non-empty string is required"),
    ("domain: d\ndescriptors:\n  - value: x\n", "f.yaml: descriptors[0].key: a non-empty string is required"),
    (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
        "f.yaml: descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight'",
    ),
    (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: -1}\n",
        "f.yaml: descriptors[0].rate_limit.requests_per_unit: must be an integer",
    ),
    (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n",
        "f.yaml: descriptors[0].rate_limit.unit: should not be set when unlimited is true",
    ),
    (
        "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
        "f.yaml: descriptors[1]: duplicate descriptor composite key 'k'",
    ),
    (
        "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n        colour: red\n",
        "f.yaml: descriptors[0].descriptors[0].colour: unknown key",
    ),
    (
        "domain: d\ndescriptors:\n  - key: k\n"
        "    rate_limit: {unit: second, requests_per_unit: 1, replaces: [x]}\n",
        "f.yaml: descriptors[0].rate_limit.replaces[0].name: a non-empty string is required",
    ),
    ("domain: d\ndescriptors: [\n", "f.yaml: invalid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_bad_config_names_file_path_and_reason(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "f.yaml")
    assert str(info.value).startswith(message)


def test_duplicate_domain_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("domain: d\n")
    (tmp_path / "b.yaml").write_text("domain: d\n")
    with pytest.raises(ConfigError, match=r"b.yaml: domain: duplicate domain 'd' \(also in .*a.yaml\)"):
        load_directory(tmp_path)


def test_route_rate_limits_need_a_ratelimit_section() -> None:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": "http://127.0.0.1:1"}},
            "routes": [
                {"prefix": "/", "upstream": "echo", "rate_limits": [{"actions": [{"remote_address": {}}]}]}
            ],
        }
    )
    assert config.reference_errors() == [
        (("routes", 0, "rate_limits"), "needs a top-level 'ratelimit' section")
    ]


@pytest.mark.envoy
def test_rendered_ratelimit_wiring_passes_envoy_validate(envoy_validate: Any) -> None:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": "http://127.0.0.1:8080"}},
            "ratelimit": {"address": "127.0.0.1:8081", "domain": "gateway", "failure_mode_deny": True},
            "routes": [
                {
                    "prefix": "/",
                    "upstream": "echo",
                    "rate_limits": [
                        {"actions": [{"remote_address": {}}]},
                        {"actions": [{"request_headers": {"header_name": "x-t", "descriptor_key": "t"}}]},
                    ],
                }
            ],
        }
    )
    bootstrap = render_bootstrap(Gateway(config, {}, "<test>"))
    names = [c["name"] for c in bootstrap["static_resources"]["clusters"]]
    assert "envoykit_ratelimit" in names
    envoy_validate(bootstrap)
