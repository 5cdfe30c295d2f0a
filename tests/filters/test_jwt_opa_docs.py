"""The runnable examples and YAML blocks of docs/filters/jwt.md and docs/filters/opa.md, executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCS = Path(__file__).parents[2] / "docs" / "filters"


def _blocks(page: str, lang: str) -> list[str]:
    blocks = re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"{page} has no {lang} block"
    return blocks


@pytest.mark.parametrize("page", ["jwt.md", "opa.md"])
def test_python_examples_run(page: str) -> None:
    for i, block in enumerate(_blocks(page, "python")):
        exec(compile(block, f"{page}[{i}]", "exec"), {})


@pytest.mark.parametrize("page", ["jwt.md", "opa.md"])
def test_yaml_examples_load(page: str, tmp_path: Path) -> None:
    from envoykit.gateway._load import resolve_filter

    # The examples name production paths: point them at real (empty) ones.
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "authz.rego").write_text("package envoy.authz\ndefault allow := false\n")
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    for block in _blocks(page, "yaml"):
        block = block.replace("/etc/envoykit/policies", str(tmp_path / "policies"))
        block = block.replace("/etc/jwks.json", str(tmp_path / "jwks.json"))
        for spec in yaml.safe_load(block):
            resolve_filter(spec["filter"])(spec.get("config"))
