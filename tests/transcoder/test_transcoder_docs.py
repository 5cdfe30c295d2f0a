"""The gateway-file example of docs/filters/grpc-json-transcoder.md loads and renders."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import parse_gateway

PAGE = Path(__file__).parents[2] / "docs" / "filters" / "grpc-json-transcoder.md"


def test_gateway_example_loads_and_renders(descriptor_set: Path) -> None:
    (text,) = re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S)
    doc = yaml.safe_load(text.replace("bookstore.pb", str(descriptor_set)))
    gateway = parse_gateway(yaml.safe_dump(doc))
    bootstrap = render_bootstrap(gateway)
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    assert {"upstream_bookstore", "envoykit_sidecar"} <= clusters
