"""The runnable examples of the authz filter pages and docs/extauthz.md, executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs"
PAGES = ["filters/ip-filter.md", "filters/rules.md", "filters/egress-allowlist.md", "extauthz.md"]


@pytest.mark.parametrize("page", PAGES)
def test_python_examples_run(page: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks
    for i, block in enumerate(blocks):
        if "SidecarThread" in block:
            block = block.replace("print(sidecar.address)", "assert sidecar.address")
        exec(compile(block, f"{page}[{i}]", "exec"), {})


@pytest.mark.parametrize("page", PAGES)
def test_yaml_examples_load(page: str) -> None:
    from envoykit.gateway._load import resolve_filter

    for block in re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), flags=re.S):
        import yaml

        data = yaml.safe_load(block)
        specs = (
            data
            if isinstance(data, list)
            else [f for chain in data.get("chains", {}).values() for f in chain]
        )
        for spec in specs:
            resolve_filter(spec["filter"])(spec.get("config"))


def test_example_gateway_loads() -> None:
    from envoykit.gateway import load_gateway

    gateway = load_gateway(DOCS / "examples" / "authz_gateway.yaml")
    assert gateway.config.authz is not None and len(gateway.chains["authz"].filters) == 3
