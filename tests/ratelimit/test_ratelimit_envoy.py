"""The rate-limit service behind real Envoys (native ``envoy.filters.http.ratelimit``, rendered
by ``envoykit envoy-config``) with a real ``redis-server`` the tests start and stop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import Gateway, GatewayConfig
from envoykit.testing import EchoUpstream, EnvoyFactory
from envoykit.testing._net import wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(120)]

#: The services' clock, frozen mid-hour: the hour windows below cannot roll over during a test
#: (Redis still expires keys on its own clock, an hour after they are written).
NOW = 1_800_000_000.0 + 1800.5


def frozen() -> float:
    return NOW


CONFIG = """\
domain: gateway
descriptors:
  - key: tenant
    rate_limit:
      unit: hour
      requests_per_unit: {limit}
"""


def config_dir(tmp_path: Path, limit: int = 5) -> Path:
    directory = tmp_path / "rls"
    directory.mkdir(exist_ok=True)
    (directory / "gateway.yaml").write_text(CONFIG.format(limit=limit))
    return directory


def bootstrap(upstream: EchoUpstream, rls_address: str, *, deny: bool = False) -> dict[str, Any]:
    config = GatewayConfig.model_validate(
        {
            "upstreams": {"echo": {"url": f"http://127.0.0.1:{upstream.port}"}},
            "ratelimit": {"address": rls_address, "domain": "gateway", "failure_mode_deny": deny},
            "routes": [
                {
                    "prefix": "/",
                    "upstream": "echo",
                    "rate_limits": [
                        {
                            "actions": [
                                {"request_headers": {"header_name": "x-tenant", "descriptor_key": "tenant"}}
                            ]
                        }
                    ],
                }
            ],
        }
    )
    return render_bootstrap(Gateway(config, {}, "<test>"), listener_port=0, admin_port=0)


def statuses(url: str, n: int, tenant: str = "acme") -> list[int]:
    with httpx.Client(timeout=10) as client:
        return [client.get(url, headers={"x-tenant": tenant}).status_code for _ in range(n)]


def test_limits_enforced_through_envoy_with_headers(
    tmp_path: Path,
    rls_factory: Any,
    redis_server: Any,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
) -> None:
    rls = rls_factory(config_dir(tmp_path), redis_url=redis_server.url, clock=frozen)
    envoy = envoy_factory(bootstrap(echo_upstream, rls.address))
    assert statuses(envoy.url("/"), 7) == [200] * 5 + [429] * 2
    assert statuses(envoy.url("/"), 1, tenant="other") == [200]  # its own counter
    with httpx.Client(timeout=10) as client:
        limited = client.get(envoy.url("/"), headers={"x-tenant": "acme"})
        allowed = client.get(envoy.url("/"), headers={"x-tenant": "new"})
    assert limited.status_code == 429
    assert limited.headers["ratelimit-limit"] == "5" and limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["retry-after"] == limited.headers["ratelimit-reset"] == "1800"
    assert allowed.headers["ratelimit-remaining"] == "4"
    # The counters are in Redis, under hash-tagged keys.
    assert b"{gateway_tenant_acme_}" in redis_server.command("KEYS", "*")
    # No header, no descriptor: never limited.
    with httpx.Client(timeout=10) as client:
        assert [client.get(envoy.url("/")).status_code for _ in range(8)] == [200] * 8


def test_two_envoys_share_one_limit_through_redis(
    tmp_path: Path,
    rls_factory: Any,
    redis_server: Any,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
) -> None:
    directory = config_dir(tmp_path, limit=10)
    rls_a = rls_factory(directory, redis_url=redis_server.url, clock=frozen)
    rls_b = rls_factory(directory, redis_url=redis_server.url, clock=frozen)
    envoy_a = envoy_factory(bootstrap(echo_upstream, rls_a.address))
    envoy_b = envoy_factory(bootstrap(echo_upstream, rls_b.address))
    seen = []
    for _ in range(8):
        seen += statuses(envoy_a.url("/"), 1) + statuses(envoy_b.url("/"), 1)
    assert seen.count(200) == 10 and seen.count(429) == 6
    assert seen[:10] == [200] * 10


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_down_decides_within_the_timeout_and_recovers(
    mode: str,
    tmp_path: Path,
    rls_factory: Any,
    redis_server: Any,
    echo_upstream: EchoUpstream,
    envoy_factory: EnvoyFactory,
) -> None:
    rls = rls_factory(
        config_dir(tmp_path, limit=3), redis_url=redis_server.url, failure_mode=mode, clock=frozen
    )
    envoy = envoy_factory(bootstrap(echo_upstream, rls.address))
    assert statuses(envoy.url("/"), 4) == [200, 200, 200, 429]
    redis_server.stop()
    expected = 200 if mode == "open" else 429
    with httpx.Client(timeout=10) as client:
        for tenant in ("acme", "fresh"):
            started = time.monotonic()
            response = client.get(envoy.url("/"), headers={"x-tenant": tenant})
            elapsed = time.monotonic() - started
            assert response.status_code == expected
            assert elapsed < 1.0, f"a request took {elapsed:.2f}s with Redis down"
    assert rls.server.limiter.stats.backend_errors >= 2
    # Redis back (empty: it keeps nothing on disk): counting starts again.
    redis_server.start()
    wait_for(lambda: statuses(envoy.url("/"), 1, tenant="after")[0] == 200, what="recovery")
    assert statuses(envoy.url("/"), 3, tenant="after") == [200, 200, 429]


def test_invalid_yaml_is_reported_and_previous_config_stays(
    tmp_path: Path, rls_factory: Any, echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory, caplog: Any
) -> None:
    directory = config_dir(tmp_path, limit=2)
    rls = rls_factory(directory, clock=frozen)
    envoy = envoy_factory(bootstrap(echo_upstream, rls.address))
    assert statuses(envoy.url("/"), 3, tenant="a") == [200, 200, 429]
    (directory / "gateway.yaml").write_text(
        "domain: gateway\ndescriptors:\n  - key: tenant\n    rate_limit:\n      unit: fortnight\n"
        "      requests_per_unit: 100\n"
    )
    watcher = rls.server.watcher
    wait_for(lambda: watcher.last_error, what="the reload error")
    assert watcher.last_error == (
        f"{directory / 'gateway.yaml'}: descriptors[0].rate_limit.unit: invalid rate limit unit 'fortnight' "
        "(one of second, minute, hour, day, week, month, year)"
    )
    assert any("previous one stays in force" in r.getMessage() for r in caplog.records)
    assert statuses(envoy.url("/"), 3, tenant="b") == [200, 200, 429]  # still the old limit of 2
    (directory / "gateway.yaml").write_text("domain: gateway\ndescriptors: [unclosed\n")
    wait_for(lambda: "invalid YAML" in (watcher.last_error or ""), what="the YAML error")
    assert "gateway.yaml: invalid YAML (line 3, column 1)" in (watcher.last_error or "")
    (directory / "gateway.yaml").write_text(CONFIG.format(limit=4))
    wait_for(lambda: watcher.last_error is None and watcher.loads == 2, what="the good reload")
    assert statuses(envoy.url("/"), 5, tenant="c") == [200] * 4 + [429]
