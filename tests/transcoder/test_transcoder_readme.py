"""The README's gRPC-JSON transcoding example, run as written: its gateway file (with the
descriptor set and the bookstore's real port) behind a real Envoy, and its curl commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from envoykit.envoyconfig import render_bootstrap
from envoykit.gateway import parse_gateway
from envoykit.runtime import SidecarThread
from envoykit.testing import EnvoyFactory

README = Path(__file__).parents[2] / "README.md"

pytestmark = pytest.mark.envoy


def _readme_example() -> tuple[str, list[str]]:
    section = README.read_text().split("### gRPC-JSON transcoding", 1)[1].split("\n## ", 1)[0]
    (gateway,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return gateway, [line for line in commands.splitlines() if line.strip()]


def test_readme_transcoding_example_answers_as_its_comments_say(
    descriptor_set: Path, bookstore: int, envoy_factory: EnvoyFactory
) -> None:
    text, commands = _readme_example()
    text = text.replace("bookstore.pb", str(descriptor_set)).replace(
        "127.0.0.1:9000", f"127.0.0.1:{bookstore}"
    )
    gateway = parse_gateway(text, source="README.md")
    chains = dict(gateway.chains)
    assert gateway.config.sidecar.server == "h2"  # as recommended for the transcoder
    with SidecarThread(chains, default_chain=None, server_model=gateway.config.sidecar.server) as sidecar:
        bootstrap = render_bootstrap(
            gateway, sidecar=sidecar.address, listener_port=0, admin_port=0, access_log=""
        )
        envoy = envoy_factory(bootstrap)
        with httpx.Client(base_url=envoy.url(""), timeout=10) as client:
            get, create, missing, bad = commands
            assert "/v1/shelves/1/books/2" in get
            book = client.get("/v1/shelves/1/books/2")
            assert book.status_code == 200 and json.loads(book.text)["id"] == "2"

            assert """-d '{"title":"Dune"}'""" in create
            made = client.post("/v1/shelves/1/books", content=b'{"title":"Dune"}')
            assert made.status_code == 200 and json.loads(made.text)["title"] == "Dune"

            assert "404" in missing
            gone = client.get("/v1/shelves/1/books/404")
            assert gone.status_code == 404 and json.loads(gone.text)["code"] == 5

            assert """-d '{"title":'""" in bad
            rejected = client.post("/v1/shelves/1/books", content=b'{"title":')
            assert rejected.status_code == 400 and rejected.text
