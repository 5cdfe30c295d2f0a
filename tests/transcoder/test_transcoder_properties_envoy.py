"""Property test through a real Envoy: random paths, query strings and bodies get the same
status, content type and JSON body from envoykit's transcoder as from Envoy's native one, and envoykit
never answers 5xx itself (a 503 is only the gRPC backend refusing a passed-through request)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envoykit.testing import EnvoyFactory

from .live import two_listeners
from .test_transcoder_properties import METHODS, TEMPLATES, bodies, segment

pytestmark = [pytest.mark.envoy, pytest.mark.slow, pytest.mark.timeout(300)]

_BACKEND_RESET = "upstream connect error or disconnect/reset before headers"


def test_random_requests_answer_like_native(
    descriptor_set: Path, bookstore: int, envoy_factory: EnvoyFactory
) -> None:
    with (
        two_listeners(descriptor_set, bookstore, {}, envoy_factory) as (native, ours),
        httpx.Client(timeout=10) as client,
    ):

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(
            method=st.sampled_from(METHODS),
            template=st.sampled_from(TEMPLATES),
            segments=st.lists(segment, min_size=3, max_size=3),
            query=st.lists(
                st.tuples(
                    st.sampled_from(
                        ["shelf", "page_size", "tags", "genre", "author.name", "in_stock", "book"]
                    ),
                    segment,
                ),
                max_size=3,
            ),
            body=st.one_of(st.none(), bodies),
        )
        def check(
            method: str, template: str, segments: list[str], query: list[tuple[str, str]], body: bytes | None
        ) -> None:
            path = template.format(*segments[: template.count("{}")])
            if query:
                path += "?" + "&".join(f"{k}={v}" for k, v in query)
            theirs = client.request(method, native + path, content=body)
            mine = client.request(method, ours + path, content=body)
            assert mine.status_code < 500 or mine.text.startswith(_BACKEND_RESET), (path, body, mine.text)
            key = (mine.status_code, mine.headers.get("content-type"))
            assert key == (theirs.status_code, theirs.headers.get("content-type")), (
                path,
                body,
                mine.text,
                theirs.text,
            )
            if key[1] == "application/json":
                assert mine.json() == theirs.json(), (path, body)

        check()
