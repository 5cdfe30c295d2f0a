"""A Redis that accepts connections but never answers (a hung or overloaded server, a half-open
proxy) still gets a decision within the deadline, failing open or closed; plus the month/year
units and the service's concurrency (decisions from many threads at once stay exact)."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from envoykit.ratelimit import BackendError, Hit, RedisBackend

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
#: Mid-hour, mid-day, mid-30-day window, mid-365-day window: no window rolls over in a test.
NOW = 1_800_000_000.0 + 15 * 86400 + 1800.5
CONFIG = """\
domain: api
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: plan
    value: monthly
    rate_limit: {unit: month, requests_per_unit: 2}
  - key: plan
    value: yearly
    rate_limit: {unit: year, requests_per_unit: 1}
"""


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A port that completes TCP handshakes (the kernel's backlog) and never reads or writes."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rls"
    directory.mkdir()
    (directory / "api.yaml").write_text(CONFIG)
    return directory


def test_backend_hit_is_bounded_by_the_timeout(silent_redis: str) -> None:
    backend = RedisBackend(silent_redis, timeout=0.05)
    try:
        for _ in range(3):  # the first call connects; later ones reconnect after the failure
            started = time.monotonic()
            with pytest.raises(BackendError, match=r"redis redis://127\.0\.0\.1:\d+/0: "):
                backend.hit([Hit("{api_tenant_a_}0", None, 1, 3600)])
            assert time.monotonic() - started < 0.5
    finally:
        backend.close()


@pytest.mark.parametrize(("mode", "code"), [("open", OK), ("closed", OVER)])
def test_silent_redis_decides_within_the_timeout(
    mode: str, code: int, tmp_path: Path, rls_factory: Any, rls_client: Any, silent_redis: str
) -> None:
    rls = rls_factory(
        config_dir(tmp_path), redis_url=silent_redis, redis_timeout=0.05, failure_mode=mode, clock=lambda: NOW
    )
    client = rls_client(rls.address)
    for tenant in ("a", "b", "a"):
        started = time.monotonic()
        reply = client.ask("api", [[("tenant", tenant)]])
        elapsed = time.monotonic() - started
        assert reply.overall_code == code
        assert [s.code for s in reply.statuses] == [code]
        assert elapsed < 0.5, f"a decision took {elapsed:.2f}s with a silent Redis"
    assert rls.server.limiter.stats.backend_errors == 3
    # Unlimited or unmatched descriptors never wait for the backend.
    assert client.ask("api", [[("other", "x")]]).overall_code == OK


def test_month_and_year_units(tmp_path: Path, rls_factory: Any, rls_client: Any, redis_server: Any) -> None:
    rls = rls_factory(config_dir(tmp_path), redis_url=redis_server.url, clock=lambda: NOW)
    client = rls_client(rls.address)
    monthly = [client.ask("api", [[("plan", "monthly")]]) for _ in range(3)]
    assert [r.overall_code for r in monthly] == [OK, OK, OVER]
    status = monthly[0].statuses[0]
    assert status.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MONTH
    month = 30 * 86400  # envoyproxy/ratelimit's month: 30 days from the epoch
    assert status.duration_until_reset.seconds == month - int(NOW) % month
    yearly = [client.ask("api", [[("plan", "yearly")]]) for _ in range(2)]
    assert [r.overall_code for r in yearly] == [OK, OVER]
    assert yearly[0].statuses[0].current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.YEAR
    keys = redis_server.command("KEYS", "*")
    assert f"{{api_plan_monthly_}}{int(NOW) // month * month}".encode() in keys


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_concurrent_decisions_are_exact(
    backend: str, tmp_path: Path, rls_factory: Any, rls_client: Any, redis_server: Any
) -> None:
    """The thread-pool server decides many calls at once: no hit is lost or double-counted."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "c.yaml").write_text(
        "domain: c\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 100}\n"
    )
    url = redis_server.url if backend == "redis" else None
    rls = rls_factory(tmp_path / "c", redis_url=url, redis_timeout=2.0, clock=lambda: NOW, threads=8)
    client = rls_client(rls.address)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: client.ask("c", [[("k", "v")]]), range(160)))
    assert sum(r.overall_code == OK for r in replies) == 100
    remaining = sorted(r.statuses[0].limit_remaining for r in replies if r.overall_code == OK)
    assert remaining == list(range(100))
    assert rls.server.limiter.stats.get("c.k", "over_limit") == 60
    assert rls.server.limiter.stats.get("c.k", "total_hits") == 160


def test_thread_pool_size_is_validated(tmp_path: Path) -> None:
    from envoykit import ConfigError
    from envoykit.ratelimit import RateLimitServer

    with pytest.raises(ConfigError, match="threads: must be at least 1"):
        RateLimitServer(config_dir(tmp_path), address="127.0.0.1:0", threads=0)
