"""`build-wasm` refuses filters that cannot run inside Envoy: file, line and reason."""

from __future__ import annotations

from pathlib import Path

from envoykit.wasm._portable import check_portable

GOOD = """
import json
import re
from dataclasses import dataclass

from envoykit import FilterConfig, HttpFilter, Reply
from envoykit_filters import AddHeaders
from pydantic import Field


class Ok(HttpFilter):
    def on_request_headers(self, request, state):
        return None
"""

BAD = """
import socket
from dataclasses import dataclass
import threading, json
from asyncio import sleep

import numpy
import no_such_package_here

from envoykit import HttpFilter


class Fetcher(HttpFilter):
    async def on_request_headers(self, request, state):
        await sleep(0)

    def helper(self):
        return 1

    async def not_a_hook(self):
        return 2
"""


def test_a_portable_filter_passes(tmp_path: Path):
    path = tmp_path / "good.py"
    path.write_text(GOOD)
    assert check_portable(path) == []


def test_each_problem_is_named_with_file_line_and_reason(tmp_path: Path):
    path = tmp_path / "bad.py"
    path.write_text(BAD)
    problems = [str(p) for p in check_portable(path)]
    expected = [
        f"{path}:2: imports socket: there is no network access inside Envoy's Wasm VM",
        f"{path}:4: imports threading: there are no threads inside Envoy's Wasm VM",
        f"{path}:5: imports asyncio: nothing can be awaited inside Envoy",
        f"{path}:8: imports no_such_package_here, which is not installed, so it cannot be frozen in",
        f"{path}:14: Fetcher.on_request_headers is async: nothing can be awaited inside Envoy",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert not any("not_a_hook" in p for p in problems)
    assert all(
        p.endswith("run this filter in the sidecar placement instead")
        for p in problems
        if "installed" not in p
    )


def test_compiled_extensions_cannot_be_frozen(tmp_path: Path):
    path = tmp_path / "ext.py"
    path.write_text("import pydantic_core\n")  # a Rust extension present in this venv
    (problem,) = check_portable(path)
    assert problem.line == 1 and "a compiled extension" in problem.reason


def test_local_helper_modules_are_fine(tmp_path: Path):
    (tmp_path / "helpers.py").write_text("X = 1\n")
    path = tmp_path / "f.py"
    path.write_text("import helpers\nfrom helpers import X\n")
    assert check_portable(path) == []


def test_syntax_errors_are_reported_not_raised(tmp_path: Path):
    path = tmp_path / "broken.py"
    path.write_text("def x(:\n")
    (problem,) = check_portable(path)
    assert problem.line == 1 and problem.reason.startswith("syntax error")


def test_host_only_parts_of_envoykit_are_refused(tmp_path: Path):
    path = tmp_path / "f.py"
    path.write_text("from envoykit import HttpFilter\nfrom envoykit.runtime import SidecarThread\n")
    (problem,) = check_portable(path)
    assert problem.line == 2 and "only the SDK core (`envoykit`) exists inside Envoy" in problem.reason
