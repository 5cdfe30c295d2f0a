"""The transcoder's protobuf classes live as long as the process: none is collected and
re-created per request (upb caches classes weakly; a class freed by the cyclic GC while another
thread looks it up has crashed the interpreter)."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

from envoykit.testing import Harness
from envoykit_filters.transcoder import GrpcJsonTranscoder

from .fake import FakeGrpc


def test_message_classes_survive_requests_and_collections(descriptor_set: Path) -> None:
    config = {"proto_descriptor": str(descriptor_set), "services": ["bookstore.Bookstore"]}
    transcoder = GrpcJsonTranscoder(config)
    harness = Harness(transcoder, upstream=FakeGrpc(descriptor_set.read_bytes()))
    book = {"title": "T", "author": {"name": "E"}, "published": "2021-01-01T00:00:00Z", "extra": {"k": 1}}
    ex = harness.request("POST", "/v1/shelves/5/books", body=json.dumps(book))
    assert ex.status == 200 and json.loads(ex.response.body)["author"] == {"name": "E"}
    book_cls = transcoder.registry.message_class("bookstore.Book")
    nested = [weakref.ref(type(getattr(book_cls(), name))) for name in ("author", "published", "extra")]
    gc.collect()
    assert all(ref() is not None for ref in nested), "a sub-message class was collected"
    assert type(book_cls().author) is nested[0]()
    # Every message type of the descriptor set is held, nested ones and well-known types too.
    held = {cls.DESCRIPTOR.full_name for cls in transcoder.registry.classes}
    expected = {"bookstore.Author", "google.protobuf.Timestamp", "google.protobuf.Value", "google.rpc.Status"}
    assert expected <= held
