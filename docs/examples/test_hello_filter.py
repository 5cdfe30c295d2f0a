"""The docs example, tested the way docs/testing.md tells filter authors to test."""

from pathlib import Path

from envoykit.gateway import load_gateway
from envoykit.testing import Harness

from .hello_filter import Hello


def test_request_is_tagged_and_upstream_sees_the_header():
    result = Harness(Hello, {"greeting": "hi"}).request("GET", "/books")
    assert result.upstream_request.headers["x-greeting"] == "hi"
    assert result.response.headers["x-greeted"] == "yes"
    assert result.metadata["envoykit.hello"] == {"greeted": True}


def test_denied_path_gets_a_local_reply():
    result = Harness(Hello).request("GET", "/admin/users")
    assert result.local_reply and result.status == 403
    assert result.response.body == b"not here\n"
    assert result.upstream_request is None
    assert "x-greeted" not in result.response.headers


def test_example_gateway_file_loads():
    gateway = load_gateway(Path(__file__).with_name("hello_gateway.yaml"))
    assert [f.name for f in gateway.chains["default"].filters] == ["hello"]
