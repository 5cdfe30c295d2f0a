"""The transcoder in-process (Harness + an in-process gRPC upstream): what the upstream gets,
what the client gets, config errors, envoykit's additions and Python hooks around it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envoykit import Chain, ConfigError, EmptyConfig, HttpFilter, NoState, Reply, Request, Response
from envoykit.testing import Harness
from envoykit_filters.transcoder import GrpcJsonTranscoder

from .fake import FakeGrpc


@pytest.fixture
def make(descriptor_set: Path) -> Any:
    def factory(**options: Any) -> tuple[Harness, FakeGrpc]:
        upstream = FakeGrpc(descriptor_set.read_bytes())
        config = {"proto_descriptor": str(descriptor_set), "services": ["bookstore.Bookstore"], **options}
        return Harness(GrpcJsonTranscoder(config), upstream=upstream), upstream

    return factory


def test_get_becomes_a_grpc_call_and_the_answer_json(make: Any) -> None:
    harness, upstream = make()
    ex = harness.request("GET", "/v1/shelves/1/books/2?shelf=3")
    sent = ex.upstream_request
    assert sent is not None
    assert (sent.method, sent.path) == ("POST", "/bookstore.Bookstore/GetBook")
    assert sent.headers.get("content-type") == "application/grpc" and sent.headers.get("te") == "trailers"
    assert sent.headers.get("x-envoy-original-path") == "/v1/shelves/1/books/2?shelf=3"
    assert sent.body[:1] == b"\x00" and int.from_bytes(sent.body[1:5], "big") == len(sent.body) - 5
    assert (upstream.seen[0].shelf, upstream.seen[0].book) == (3, 2)  # query wins, as natively
    assert ex.status == 200 and ex.response.headers.get("content-type") == "application/json"
    body = json.loads(ex.response.body)
    assert body["id"] == "2" and body["genre"] == "SCIENCE" and body["readTime"] == "3600.500s"


def test_body_field_nested_repeated_and_well_known_types(make: Any) -> None:
    harness, upstream = make()
    book = {"title": "T", "tags": ["a"], "author": {"name": "E"}, "rating": 4, "extra": {"k": [1]},
            "published": "2021-01-01T00:00:00Z"}  # fmt: skip
    ex = harness.request("POST", "/v1/shelves/5/books", body=json.dumps(book))
    assert ex.status == 200
    got = upstream.seen[0]
    assert got.shelf == 5 and got.book.author.name == "E" and got.book.rating.value == 4
    assert json.loads(ex.response.body)["extra"] == {"k": [1]}
    assert ex.upstream_request is not None
    assert ex.upstream_request.headers.get("content-length") == str(len(ex.upstream_request.body))


def test_print_options(make: Any) -> None:
    harness, _ = make(
        print_options={
            "preserve_proto_field_names": True,
            "always_print_enums_as_ints": True,
            "always_print_primitive_fields": True,
        }
    )
    body = json.loads(harness.request("GET", "/v1/shelves/1/books/2").response.body)
    assert body["read_time"] == "3600.500s" and body["genre"] == 2 and body["in_stock"] is False


def test_server_streaming_array_and_ndjson(make: Any) -> None:
    harness, _ = make()
    ex = harness.request("GET", "/v1/shelves/1/books:stream?page_size=3")
    assert [b["id"] for b in json.loads(ex.response.body)] == ["1", "2", "3"]
    harness, _ = make(print_options={"stream_newline_delimited": True})
    lines = harness.request("GET", "/v1/shelves/1/books:stream?page_size=2").response.body.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "2"]


def test_http_body_both_ways(make: Any) -> None:
    harness, upstream = make()
    ex = harness.request("GET", "/v1/files/a/b%2Fc/d.html?format=html")
    assert ex.response.headers.get("content-type") == "text/html"
    assert ex.response.body == b"file a/b%2Fc/d.html\n"  # '**' keeps an encoded '/' encoded
    ex = harness.request("POST", "/v1/upload/x", body=b"\x00raw", headers={"content-type": "image/png"})
    assert (upstream.seen[-1].body.content_type, upstream.seen[-1].body.data) == ("image/png", b"\x00raw")


@pytest.mark.parametrize(
    ("convert", "status", "body", "ctype"),
    [(False, 404, b"", "application/grpc"),
     (True, 404, b'{"code":5,"message":"book 404 not found"}', "application/json")],
)  # fmt: skip
def test_grpc_errors(make: Any, convert: bool, status: int, body: bytes, ctype: str) -> None:
    harness, _ = make(convert_grpc_status=convert)
    ex = harness.request("GET", "/v1/shelves/1/books/404")
    assert (ex.status, ex.response.body, ex.response.headers.get("content-type")) == (status, body, ctype)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [("/v1/shelves/5/books", "{bad", "Unexpected token"),
     ("/v1/shelves/5/books", '{"title": 5}', "title"),
     ("/v1/shelves/x/books", None, 'shelf: invalid value "x" for type TYPE_INT64'),
     ("/v1/shelves/1/books?genre=NOPE", None, "bookstore.Genre"),
     ("/v1/shelves", "[1]", "JSON object")],
)  # fmt: skip
def test_bad_requests_are_400_with_a_message(make: Any, path: str, body: str | None, words: str) -> None:
    harness, _ = make()
    ex = harness.request("GET" if body is None else "POST", path, body=body or b"")
    assert ex.status == 400 and ex.local_reply and words in ex.response.text()
    assert harness.metric("envoykit.grpc_json_transcoder.rejected") == 1


def test_unknown_fields_ignored_or_rejected(make: Any) -> None:
    harness, upstream = make()
    assert harness.request("POST", "/v1/shelves", body='{"theme": "x", "nope": {"a": 1}}').status == 200
    assert upstream.seen[0].theme == "x"
    harness, _ = make(reject_unknown_fields=True)
    ex = harness.request("POST", "/v1/shelves", body='{"theme": "x", "nope": 1}')
    assert ex.status == 400 and "nope" in ex.response.text()


def test_unmatched_requests_pass_through_untouched(make: Any) -> None:
    harness, upstream = make()
    for method, path in [
        ("GET", "/other"),
        ("POST", "/v1/shelves/1/books/2"),
        ("GET", "/v1/shelves/1/books?x=1"),
    ]:
        ex = harness.request(method, path)
        assert ex.upstream_request is not None and ex.upstream_request.path == path
        assert ex.status == 415  # the fake gRPC server refuses non-gRPC
    assert not upstream.seen
    harness, upstream = make(ignore_unknown_query_parameters=True, ignored_query_parameters=["key"])
    assert harness.request("GET", "/v1/shelves/1/books?x=1&key=s").status == 200


def test_response_body_may_name_a_non_http_body_field(descriptor_set: Path) -> None:
    """envoykit addition: the native filter refuses such a rule at load."""
    transcoder = GrpcJsonTranscoder(
        {"proto_descriptor": str(descriptor_set), "services": ["bookstore.Bookstore"]}
    )
    binding = next(b for b in transcoder.registry.bindings if b.template.template.endswith("/page"))
    object.__setattr__(binding, "response_body", ("book",))
    ex = Harness(transcoder, upstream=FakeGrpc(descriptor_set.read_bytes())).request(
        "GET", "/v1/shelves/1/books/7/page"
    )
    assert (ex.status, json.loads(ex.response.body)) == (200, "7")


@pytest.mark.parametrize(
    ("config", "words"),
    [({"proto_descriptor": "/nonexistent.pb", "services": ["a.B"]}, "proto_descriptor: cannot read"),
     ({"proto_descriptor": __file__, "services": ["a.B"]}, "proto_descriptor"),
     ({"services": ["a.B"]}, "proto_descriptor"),
     ({"proto_descriptor": "x", "services": []}, "services")],
)  # fmt: skip
def test_bad_config_fails_at_load(config: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        GrpcJsonTranscoder(config)


def test_unknown_service_fails_at_load(descriptor_set: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"services: service 'bookstore\.Nope' is not in the descriptor set"
    ):
        GrpcJsonTranscoder({"proto_descriptor": str(descriptor_set), "services": ["bookstore.Nope"]})


# -- Python hooks around the transcoder: before it sees JSON, after it sees gRPC -------------
@dataclass
class _Seen:
    grpc_path: str = ""


class Redact(HttpFilter[EmptyConfig, NoState]):
    """Before the transcoder in the chain: sets a JSON default on the way in, redacts a JSON
    field on the way out (response hooks run last to first)."""

    def on_request_body(self, request: Request, state: NoState) -> Reply | None:
        book = json.loads(request.body or b"{}")
        book.setdefault("tags", ["defaulted"])
        request.body = json.dumps(book).encode()
        return None

    def on_response_body(self, response: Response, state: NoState) -> Reply | None:
        book = json.loads(response.body)
        book["author"]["name"] = "<redacted>"
        response.body = json.dumps(book).encode()
        return None


def test_python_hooks_before_and_after_transcoding(descriptor_set: Path) -> None:
    transcoder = GrpcJsonTranscoder(
        {"proto_descriptor": str(descriptor_set), "services": ["bookstore.Bookstore"]}
    )
    upstream = FakeGrpc(descriptor_set.read_bytes())
    harness = Harness(Chain([Redact(), transcoder]), upstream=upstream)
    ex = harness.request("POST", "/v1/shelves/5/books", body='{"title": "t", "author": {"name": "Eve"}}')
    assert list(upstream.seen[0].book.tags) == ["defaulted"]
    assert json.loads(ex.response.body)["author"]["name"] == "<redacted>"


def test_client_streaming_takes_a_json_array(make: Any) -> None:
    harness, upstream = make()
    ex = harness.request("POST", "/v1/shelves/3/books:bulk", body='[{"title": "a"}, {"title": "b"}]')
    assert [(r.shelf, r.book.title) for r in upstream.seen] == [(3, "a"), (0, "b")]  # bindings: first only
    assert json.loads(ex.response.body)["total"] == 2
    assert harness.request("POST", "/v1/shelves/3/books:bulk", body='{"title": "a"}').status == 400
