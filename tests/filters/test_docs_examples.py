"""The examples in the header filters' docs pages run and their configs load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from envoykit.gateway._load import resolve_filter

DOCS = Path(__file__).parents[2] / "docs" / "filters"
PAGES = ["security-headers.md", "waf-log.md", "local-ratelimit.md"]


def blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), re.S)


@pytest.mark.parametrize("page", PAGES)
def test_python_examples_run(page):
    (code,) = blocks(page, "python")
    exec(compile(code, f"{page}[python]", "exec"), {})


@pytest.mark.parametrize("page", PAGES)
def test_yaml_examples_are_valid_configs(page):
    (text,) = blocks(page, "yaml")
    for specs in yaml.safe_load(text)["chains"].values():
        for spec in specs:
            resolve_filter(spec["filter"])(spec.get("config"))
