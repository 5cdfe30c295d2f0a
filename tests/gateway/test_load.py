"""Gateway files: good ones build chains, each bad one fails with file, line, field and reason.

One fixture file per config error lives in ``bad/``; its first line says what the message must
match, so adding a case is adding a file.
"""

import re
from pathlib import Path

import pytest

from envoykit import ConfigError
from envoykit.gateway import load_gateway, parse_gateway

BAD = sorted((Path(__file__).parent / "bad").glob("*.yaml"))


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_reports_file_line_field_and_reason(path: Path):
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as info:
        load_gateway(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert re.search(expect, message), f"{message!r} does not match {expect!r}"


def test_all_problems_are_reported_in_one_pass():
    text = """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
chains:
  default:
    - filter: add-headers
      config: {bogus: 1}
    - filter: deny-paths
      config: {prefixes: []}
routes:
  - {prefix: /, upstream: app}
"""
    with pytest.raises(ConfigError) as info:
        parse_gateway(text, source="gw.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("gw.yaml:7: chains.default[0].config.bogus")
    assert lines[1].startswith("gw.yaml:9: chains.default[1].config.prefixes")


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway(tmp_path / "nope.yaml")


def test_good_file_builds_chains_with_names_and_failure_modes(tmp_path: Path):
    (tmp_path / "my_filters.py").write_text(
        "from envoykit import HttpFilter\n"
        "class Tag(HttpFilter):\n"
        "    def on_request_headers(self, request, state):\n"
        "        request.headers.set('x-tag', '1')\n"
    )
    gw = tmp_path / "gw.yaml"
    gw.write_text(
        """
upstreams:
  app: {url: "http://127.0.0.1:8080"}
chains:
  default:
    - filter: my_filters.py:Tag
      failure_mode: open
    - filter: add-headers
      name: second
      config: {response: {x-b: "2"}}
  other: []
routes:
  - {prefix: /x, upstream: app, chain: other}
  - {prefix: /none, upstream: app, chain: null}
  - {prefix: /, upstream: app}
"""
    )
    gateway = load_gateway(gw)
    chain = gateway.chains["default"]
    assert [f.name for f in chain.filters] == ["tag", "second"]
    assert chain.filters[0].failure_mode.value == "open"
    assert chain.needs.request_headers and chain.needs.response_headers
    routes = gateway.config.routes
    assert [r.chain_name("default") for r in routes] == ["other", None, "default"]
