"""The README's authorization example, run as a user runs it: `envoykit demo --config
docs/examples/authz_gateway.yaml` in its own process, then every curl command of that README block
with the answer its comment promises (`# 403 RBAC: access denied`: status, then body text)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from envoykit.testing import free_port

ROOT = Path(__file__).parents[2]
ENVOYKIT = [sys.executable, "-m", "envoykit.cli"]


def _authz_curls() -> list[tuple[str, str]]:
    """(command, comment) of each curl line in the README's ext_authz section."""
    section = (ROOT / "README.md").read_text().split("## Authorization at the gateway", 1)[1]
    block = re.findall(r"```bash\n(.*?)```", section.split("### JWT", 1)[0], re.S)[0]
    return [tuple(part.strip() for part in line.split("#", 1)) for line in block.splitlines() if "#" in line]  # type: ignore[misc]


def _request(command: str, port: int) -> httpx.Request:
    args = shlex.split(command.replace("127.0.0.1:10000", f"127.0.0.1:{port}"))
    method, headers, url = "GET", {}, ""
    it = iter(args[1:])
    for arg in it:
        if arg == "-X":
            method = next(it)
        elif arg == "-H":
            name, value = next(it).split(":", 1)
            headers[name.strip()] = value.strip()
        elif not arg.startswith("-"):
            url = arg
    return httpx.Request(method, url, headers=headers)


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_readme_authz_curls_answer_as_commented() -> None:
    curls = _authz_curls()
    assert len(curls) >= 8
    port = free_port()
    proc = subprocess.Popen(
        [*ENVOYKIT, "demo", "--config", "docs/examples/authz_gateway.yaml", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner is printed once Envoy answers
            if line.startswith("Access log below"):
                break
        else:
            pytest.fail(f"the demo exited with {proc.wait()} before it was ready")
        with httpx.Client(timeout=10) as client:
            for command, comment in curls:
                response = client.send(_request(command, port))
                status, _, text = comment.partition(" ")
                text = text.split("(", 1)[0].strip()
                assert response.status_code == int(status), (command, response.status_code, response.text)
                assert text in response.text, (command, response.text)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
