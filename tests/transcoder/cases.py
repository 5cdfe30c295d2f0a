"""The differential matrix: (label, method, path, body) for every transcoder feature and error
case, and how an answer is reduced for comparison."""

from __future__ import annotations

import json
from typing import Any

import httpx

BOOK = (
    '{"title":"T","genre":"FICTION","published":"2021-01-01T00:00:00Z","read_time":"1.5s",'
    '"rating":3,"extra":{"a":[1,"x",null],"b":{"c":true}},"tags":["x","y"],'
    '"author":{"name":"Eve","birthYear":1990},"reviewers":[{"name":"R1"},{"name":"R2"}],'
    '"labels":{"k":"v"},"price":9.75,"in_stock":true}'
)

BOOKS = "/v1/shelves/5/books"

CASES: list[tuple[str, str, str, str | None]] = [
    # rules, templates, query parameters
    ("get", "GET", "/v1/shelves/1/books/2", None),
    ("additional-binding", "GET", "/v1/books/3", None),
    ("query-nested-repeated-enum", "GET",
     "/v1/shelves/1/books?page_size=5&tags=a&tags=b&genre=HISTORY&author.name=Bob&in_stock=true", None),
    ("query-enum-number", "GET", "/v1/shelves/1/books?genre=3", None),
    ("query-overrides-path", "GET", "/v1/shelves/1/books/2?shelf=9", None),
    ("query-escaped", "GET", "/v1/shelves/1/books?author.name=A%20B%26C", None),
    ("query-comma-not-split", "GET", "/v1/shelves/1/books?tags=a,b", None),
    ("query-empty-value", "GET", "/v1/shelves/1/books?genre=&page_size=", None),
    ("query-no-equals", "GET", "/v1/shelves/1/books?in_stock", None),
    ("query-bool-caps", "GET", "/v1/shelves/1/books?in_stock=TRUE", None),
    ("query-bool-word", "GET", "/v1/shelves/1/books?in_stock=yes", None),
    ("query-bool-false-word", "GET", "/v1/shelves/1/books?in_stock=N", None),
    ("query-bool-bad", "GET", "/v1/shelves/1/books?in_stock=abc", None),
    ("query-int-spaces", "GET", "/v1/shelves/1/books?page_size=%207%20", None),
    ("query-int-space-only", "GET", "/v1/shelves/1/books?page_size=%20", None),
    ("query-int-forms", "GET", "/v1/shelves/1/books?page_size=%2B5", None),
    ("query-int-float", "GET", "/v1/shelves/1/books?page_size=1.0", None),
    ("query-int-hex", "GET", "/v1/shelves/1/books?page_size=0x10", None),
    ("query-int-overflow", "GET", "/v1/shelves/1/books?page_size=99999999999", None),
    ("query-message-field", "GET", "/v1/shelves/1/books?author=x", None),
    ("query-repeated-scalar-twice", "GET", "/v1/shelves/1/books?page_size=1&page_size=2", None),
    ("query-encoded-key", "GET", "/v1/shelves/1/books?author%2Ename=Enc", None),
    ("query-negative-nested", "GET", "/v1/shelves/1/books?author.birth_year=-5", None),
    ("query-enum-lowercase", "GET", "/v1/shelves/1/books?genre=history", None),
    ("query-bad-percent", "GET", "/v1/shelves/1/books?author.name=%zz", None),
    ("query-unknown", "GET", "/v1/shelves/1/books?unknown=1", None),
    ("query-ignored", "GET", "/v1/shelves/1/books?api_key=s&page_size=1", None),
    ("query-plus", "GET", "/v1/shelves/1/books?author.name=A+B", None),
    ("query-wrapper-and-bool-number", "GET", "/v1/shelves/1/books?in_stock=1&page_size=-3", None),
    ("query-bad-int", "GET", "/v1/shelves/1/books?page_size=abc", None),
    ("query-bad-enum", "GET", "/v1/shelves/1/books?genre=NOPE", None),
    ("path-bad-int", "GET", "/v1/shelves/x/books", None),
    ("path-template-segments", "GET", "/v1/shelves/abc", None),
    ("path-double-wildcard", "GET", "/v1/files/a/b/c.txt", None),
    ("path-double-wildcard-query", "GET", "/v1/files/a/b/c.html?format=html", None),
    ("custom-verb-method", "SEARCH", "/v1/shelves/4:search", None),
    ("stream-array", "GET", "/v1/shelves/1/books:stream?page_size=2", None),
    ("response-body-httpbody-field", "GET", "/v1/shelves/1/books/2/page", None),
    ("path-verb-vs-wildcard", "GET", "/v1/shelves/1:search", None),
    ("path-empty-double-wildcard", "GET", "/v1/files/", None),
    ("path-bare-double-wildcard", "GET", "/v1/files", None),
    ("path-trailing-slash", "GET", "/v1/shelves/1/books/2/", None),
    ("path-encoded-slash-in-segment", "GET", "/v1/shelves/a%2Fb", None),
    ("path-encoded-digit", "GET", "/v1/books/%31%32", None),
    ("path-encoded-in-double-wildcard", "GET", "/v1/files/a%20b/c%2Fd", None),
    ("path-unicode", "GET", "/v1/shelves/%C3%A9t%C3%A9", None),
    # bodies
    ("post-body-field", "POST", "/v1/shelves/5/books", BOOK),
    ("post-body-star", "POST", "/v1/shelves", '{"id":3,"theme":"sci"}'),
    ("post-empty-body", "POST", "/v1/shelves/5/books", ""),
    ("patch", "PATCH", "/v1/shelves/5/books/9", '{"title":"new"}'),
    ("put-additional-star", "PUT", "/v2/shelves/5/books/9", '{"shelf":"6","book":{"title":"put"}}'),
    ("delete-empty-response", "DELETE", "/v1/shelves/5/books/9", None),
    ("httpbody-request-field", "POST", "/v1/upload/doc", "hello raw"),
    ("enum-number-in-body", "POST", "/v1/shelves/5/books", '{"genre":2}'),
    ("json-int64-forms", "POST", BOOKS, '{"id":"9007199254740993","isbn13":18446744073709551615}'),
    ("json-int64-number", "POST", "/v1/shelves/5/books", '{"id":-42}'),
    ("json-int64-overflow", "POST", "/v1/shelves/5/books", '{"id":"9223372036854775808"}'),
    ("json-float-specials", "POST", "/v1/shelves/5/books", '{"price":"NaN","weight":"-Infinity"}'),
    ("json-float-precision", "POST", "/v1/shelves/5/books", '{"price":0.1,"weight":0.1}'),
    ("json-float-exponent", "POST", "/v1/shelves/5/books", '{"price":1e300,"weight":3.4e38}'),
    ("json-bytes", "POST", "/v1/shelves/5/books", '{"cover":"aGVsbG8/+w=="}'),
    ("json-bytes-urlsafe", "POST", "/v1/shelves/5/books", '{"cover":"aGVsbG8_-w"}'),
    ("json-oneof", "POST", "/v1/shelves/5/books", '{"ebook_url":"http://x"}'),
    ("json-oneof-both", "POST", "/v1/shelves/5/books", '{"ebook_url":"http://x","pageCount":3}'),
    ("json-timestamp-offset-nanos", "POST", BOOKS, '{"published":"2021-06-01T10:00:00.123456789+02:00"}'),
    ("json-duration-negative", "POST", "/v1/shelves/5/books", '{"readTime":"-1.5s"}'),
    ("json-wrapper-null", "POST", "/v1/shelves/5/books", '{"rating":null,"title":null}'),
    ("json-value-kinds", "POST", "/v1/shelves/5/books", '{"anything":{"a":[1,2.5,"s",true,null,{"b":{}}]}}'),
    ("json-value-null", "POST", "/v1/shelves/5/books", '{"anything":null}'),
    ("json-field-mask", "POST", "/v1/shelves/5/books", '{"mask":"title,author.birthYear"}'),
    ("json-int-map-keys", "POST", "/v1/shelves/5/books", '{"by_year":{"1815":{"name":"Ada"},"-1":{}}}'),
    ("json-enum-unknown-number", "POST", "/v1/shelves/5/books", '{"genre":99}'),
    ("json-unicode", "POST", "/v1/shelves/5/books", '{"title":"caf\\u00e9 \\ud83d\\ude00 \\"q\\""}'),
    ("json-both-names", "POST", "/v1/shelves/5/books", '{"readTime":"1s","read_time":"2s"}'),
    ("json-string-for-int32", "POST", "/v1/shelves/5/books", '{"author":{"birthYear":"1990"}}'),
    ("json-float-for-int", "POST", "/v1/shelves/5/books", '{"author":{"birthYear":19.5}}'),
    ("json-exp-int", "POST", "/v1/shelves/5/books", '{"author":{"birthYear":1e3}}'),
    ("json-null-repeated", "POST", "/v1/shelves/5/books", '{"tags":null,"reviewers":[]}'),
    ("json-null-in-repeated", "POST", "/v1/shelves/5/books", '{"tags":["a",null]}'),
    ("json-nan-literal", "POST", "/v1/shelves/5/books", '{"price":NaN}'),
    ("json-raw-control-char", "POST", "/v1/shelves/5/books", '{"title":"a\tb"}'),
    ("json-duplicate-keys", "POST", "/v1/shelves/5/books", '{"title":"a","title":"b"}'),
    ("json-any-in-struct-like", "POST", "/v1/shelves/5/books", '{"extra":{"@type":"x"}}'),
    ("json-top-level-null", "POST", "/v1/shelves", "null"),
    ("json-trailing-garbage", "POST", "/v1/shelves", '{"id":1} x'),
    ("unknown-body-field", "POST", "/v1/shelves/5/books", '{"nope":1}'),
    ("bad-json", "POST", "/v1/shelves/5/books", "{bad json"),
    ("wrong-type", "POST", "/v1/shelves/5/books", '{"title":5}'),
    ("bad-enum-in-body", "POST", "/v1/shelves/5/books", '{"genre":"NOPE"}'),
    ("bad-timestamp", "POST", "/v1/shelves/5/books", '{"published":"yesterday"}'),
    ("array-for-message", "POST", "/v1/shelves", "[1,2]"),
    # client and bidirectional streaming: a JSON array of messages
    ("client-stream", "POST", "/v1/shelves/3/books:bulk", '[{"title":"a"},{"title":"b","tags":["x"]}]'),
    ("client-stream-one-object", "POST", "/v1/shelves/3/books:bulk", '{"title":"solo"}'),
    ("client-stream-empty-array", "POST", "/v1/shelves/3/books:bulk", "[]"),
    ("client-stream-empty-body", "POST", "/v1/shelves/3/books:bulk", ""),
    ("client-stream-bad-item", "POST", "/v1/shelves/3/books:bulk", '[{"title":"a"},{"title":5}]'),
    ("bidi-stream", "POST", "/v1/shelves/3/books:chat", '[{"book":{"title":"a"}},{"shelf":"9","book":{}}]'),
    # gRPC errors
    ("grpc-not-found", "GET", "/v1/shelves/1/books/404", None),
    ("grpc-invalid-argument", "POST", "/v1/fail", '{"code":3,"message":"bad arg"}'),
    ("grpc-unauthenticated", "POST", "/v1/fail", '{"code":16,"message":"who"}'),
    ("grpc-permission-denied", "POST", "/v1/fail", '{"code":7,"message":"no"}'),
    ("grpc-unavailable", "POST", "/v1/fail", '{"code":14,"message":"down"}'),
    ("grpc-internal", "POST", "/v1/fail", '{"code":13,"message":"boom"}'),
    ("grpc-rich-status", "POST", "/v1/fail", '{"code":9,"message":"why","rich":true}'),
    ("grpc-message-encoded", "POST", "/v1/fail", '{"code":3,"message":"caf\u00e9 100% sure\nnext"}'),
    ("grpc-error-in-trailers", "POST", "/v1/fail", '{"code":5,"message":"late","headers_first":true}'),
    ("stream-error-first", "POST", "/v1/fail:stream", '{"code":9,"message":"first","after":0}'),
    ("stream-error-midway", "POST", "/v1/fail:stream", '{"code":9,"message":"mid","after":2}'),
    ("post-star-with-query", "POST", "/v1/shelves?theme=q&name=n", '{"id":3,"theme":"body"}'),
    ("post-field-with-query", "POST", "/v1/shelves/5/books?book.title=q&shelf=6", '{"tags":["t"]}'),
    ("get-with-body", "GET", "/v1/shelves/1/books/2", '{"shelf":7}'),
    # no rule: passed through to the gRPC backend untouched (it resets an HTTP/1 request)
    ("no-rule", "GET", "/not/a/route", None),
    ("wrong-method", "POST", "/v1/shelves/1/books/2", None),
]  # fmt: skip


def observe(url: str) -> dict[str, Any]:
    """Each case reduced to what must match: status, content-type, gRPC status headers and
    the body (parsed JSON when JSON; for transcoder 400s only that it is text)."""
    out: dict[str, Any] = {}
    with httpx.Client(timeout=10) as client:
        for label, method, path, body in CASES:
            r = client.request(method, url + path, content=body.encode() if body is not None else None)
            ctype = r.headers.get("content-type", "")
            parsed: Any
            if ctype.startswith("application/json"):
                text = r.text
                try:
                    parsed = json.loads(text)
                except ValueError:  # newline-delimited (objects may span lines with whitespace)
                    parsed = _json_sequence(text)
            elif r.status_code == 400 and ctype == "text/plain":
                parsed = "<message>"  # the parser's wording differs; see docs
            else:
                parsed = r.text
            out[label] = {
                "status": r.status_code,
                "content-type": ctype,
                "grpc-status": r.headers.get("grpc-status"),
                "grpc-message": r.headers.get("grpc-message"),
                "body": parsed,
            }
    return out


def _json_sequence(text: str) -> list[Any]:
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out
