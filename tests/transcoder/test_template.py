"""Path templates: the google.api.http grammar, matched the way the native transcoder splits
request paths (verbs only when some template uses them, trailing slashes dropped)."""

from __future__ import annotations

import pytest

from envoykit_filters._transcoder.template import PathTemplate, TemplateError, split_path


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [("/v1/shelves/{shelf}/books/{book}", "/v1/shelves/1/books/2", {"shelf": "1", "book": "2"}),
     ("/v1/shelves/{shelf}/books/{book}", "/v1/shelves/1/books/2/", {"shelf": "1", "book": "2"}),
     ("/v1/{name=shelves/*}", "/v1/shelves/a%20b", {"name": "shelves/a b"}),
     ("/v1/{name=shelves/*}", "/v1/shelves/a/b", None),
     ("/v1/files/{path=**}", "/v1/files", {"path": ""}),
     ("/v1/files/{path=**}", "/v1/files/a/b%2Fc", {"path": "a/b%2Fc"}),
     ("/v1/{book.id}", "/v1/%31", {"book.id": "1"}),
     ("/v1/shelves/{shelf}:search", "/v1/shelves/1:search", {"shelf": "1"}),
     ("/v1/{name=shelves/*}", "/v1/shelves/1:search", None),
     ("/v1/{name=shelves/*}", "/v1/shelves/1:other", {"name": "shelves/1:other"}),
     ("/a/*/b/**", "/a/x/b/y/z", {}),
     ("/a/*", "/a/x/y", None),
     ("/v1/{a}/b", "/v1//b", {"a": ""})],
)  # fmt: skip
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    stripped, verb = split_path(path, {"search"})
    got = PathTemplate(template).match(stripped, verb)
    assert (None if got is None else {".".join(k): v for k, v in got.items()}) == expected


@pytest.mark.parametrize(
    "template",
    [
        "v1/x",
        "/v1/{",
        "/v1/}",
        "/v1/{a/b}",
        "/v1//x",
        "/v1/x{a}",
        "/v1/{a={b}}",
        "/v1/{1a}",
        "/v1/x:",
        "/v1/^",
    ],
)
def test_bad_templates(template: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate(template)
