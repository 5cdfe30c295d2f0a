"""Property tests: malformed JSON, odd paths and query strings never crash the transcoder and
never make it answer 5xx (a bad request is the client's fault: 400, or a pass-through)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envoykit.testing import Harness
from envoykit_filters.transcoder import GrpcJsonTranscoder

from .fake import FakeGrpc

TEMPLATES = [
    "/v1/shelves/{}/books", "/v1/shelves/{}/books/{}", "/v1/books/{}", "/v1/shelves/{}/books/{}/page",
    "/v1/shelves/{}/books/{}", "/v2/shelves/{}/books/{}", "/v1/shelves", "/v1/{}", "/v1/shelves/{}:search",
    "/v1/files/{}/{}", "/v1/upload/{}", "/v1/shelves/{}/books:stream", "/{}", "/v1/{}/{}/{}",
    "/v1/shelves/{}/books:bulk", "/v1/shelves/{}/books:chat",
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "SEARCH"]
FIELDS = [
    "shelf", "book", "page_size", "tags", "genre", "author.name", "author", "in_stock",
    "author.birth_year", "book.id", "x", "", "a.b.c",
]  # fmt: skip
KEYS = [*FIELDS, "title", "genre"]

segment = st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(min_size=0, max_size=8)).map(
    lambda s: quote(s, safe="")
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=8,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=40),
    st.text(max_size=30).map(str.encode),
)


@pytest.fixture(scope="module")
def harness(descriptor_set: Path) -> Harness:
    transcoder = GrpcJsonTranscoder(
        {"proto_descriptor": str(descriptor_set), "services": ["bookstore.Bookstore"]}
    )
    return Harness(transcoder, upstream=FakeGrpc(descriptor_set.read_bytes()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(METHODS),
    template=st.sampled_from(TEMPLATES),
    segments=st.lists(segment, min_size=3, max_size=3),
    query=st.lists(st.tuples(st.sampled_from(FIELDS), segment), max_size=3),
    body=st.one_of(st.none(), bodies),
)
def test_no_crash_no_5xx(
    harness: Harness, method: str, template: str, segments: list[str], query: list[Any], body: bytes | None
) -> None:
    path = template.format(*segments[: template.count("{}")])
    if query:
        path += "?" + "&".join(f"{k}={v}" for k, v in query)
    ex = harness.request(method, path, body=body or b"")
    assert ex.status < 500, (ex.status, ex.response.body)
    if ex.local_reply:
        assert ex.status == 400 and ex.response.headers.get("content-type") == "text/plain"
