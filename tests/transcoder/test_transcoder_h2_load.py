"""Concurrent transcoded requests through a real Envoy on the sidecar's native h2 server: every
one is answered like the native transcoder's (many ext_proc streams over Envoy's few connections)."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

from envoykit.testing import EnvoyFactory

from .live import two_listeners

pytestmark = [pytest.mark.envoy]
PATH = "/v1/shelves/1/books/2"
#: Over 1000 streams per connection: Envoy resets each finished ext_proc stream, and nghttp2's
#: default rapid-reset guard would GOAWAY the connection after ~1000 (every stream then 500s).
N = 80


def _fetch_many(base: str, count: int) -> list[tuple[int, bytes]]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    out = []
    try:
        for _ in range(count):
            conn.request("GET", PATH)
            response = conn.getresponse()
            out.append((response.status, response.read()))
    finally:
        conn.close()
    return out


def test_concurrent_requests_all_transcoded(
    descriptor_set: Path, bookstore: int, envoy_factory: EnvoyFactory
) -> None:
    with two_listeners(descriptor_set, bookstore, {}, envoy_factory, "h2") as (native, ours):
        expected = _fetch_many(native, 1)[0]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = [r for batch in pool.map(_fetch_many, [ours] * 16, [N] * 16) for r in batch]
    statuses = Counter(status for status, _ in results)
    assert statuses == Counter({200: 16 * N}), statuses
    assert all(json.loads(body) == json.loads(expected[1]) for _, body in results)
