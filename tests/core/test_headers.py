import pytest

from envoykit import HeaderError, Headers


def test_lookup_is_case_insensitive_and_keeps_order():
    h = Headers([("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")])
    assert h["content-type"] == "text/plain"
    assert h.get("X-A") == "1"
    assert h.get_all("x-a") == ["1", "2"]
    assert list(h) == ["content-type", "x-a"]
    assert "CONTENT-TYPE" in h and "missing" not in h
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        h["missing"]


def test_values_round_trip_arbitrary_bytes():
    raw = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
    h = Headers([(b"x-raw", raw)])
    assert h.get_bytes("x-raw") == raw
    assert h.raw_items() == [(b"x-raw", raw)]


def test_non_latin1_str_points_to_bytes():
    h = Headers()
    with pytest.raises(HeaderError, match="pass bytes"):
        h.set("x-city", "東京")
    h.set("x-city", "東京".encode())
    assert h.get_bytes("x-city") == "東京".encode()


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\x00b"])
def test_header_injection_is_refused(value):
    with pytest.raises(HeaderError, match="CR, LF or NUL"):
        Headers().set("x-a", value)


@pytest.mark.parametrize("name", ["", "bad name", "x:y", ":unknown", "é"])
def test_invalid_names_are_refused(name):
    with pytest.raises(HeaderError):
        Headers().set(name, "v")


def test_set_add_remove_and_touched_record():
    h = Headers({":path": "/", "x-keep": "1", "x-drop": "1"})
    h.set("X-New", "a")
    h.add("x-new", "b")
    assert h.remove("x-drop") is True
    assert h.remove("x-absent") is False
    assert h.get_all("x-new") == ["a", "b"]
    assert h.touched == {"x-new", "x-drop", "x-absent"}
    h.clear_touched()
    assert h.touched == frozenset()


def test_pseudo_headers_can_be_set_not_removed_or_duplicated():
    h = Headers({":path": "/a", ":method": "GET"})
    h.set(":path", "/b")
    assert h[":path"] == "/b"
    with pytest.raises(HeaderError, match="cannot be removed"):
        h.remove(":path")
    with pytest.raises(HeaderError, match="one value"):
        h.add(":method", "POST")


def test_frozen_headers_explain_why():
    h = Headers({"a": "1"})
    h.freeze("the request has already gone upstream")
    with pytest.raises(HeaderError, match="already gone upstream"):
        h.set("b", "2")
    assert h["a"] == "1"


def test_checkpoint_and_rollback():
    h = Headers({"a": "1"})
    snap = h.checkpoint()
    h.set("a", "2")
    h.add("b", "3")
    h.rollback(snap)
    assert h.items() == [("a", "1")]
    assert h.touched == frozenset()


def test_to_dict_joins_repeats():
    h = Headers([("accept", "a"), ("accept", "b"), ("cookie", "x=1"), ("cookie", "y=2")])
    assert h.to_dict() == {"accept": "a, b", "cookie": "x=1; y=2"}


def test_equality_ignores_order_but_not_values():
    assert Headers({"a": "1", "b": "2"}) == Headers([("b", "2"), ("a", "1")])
    assert Headers({"a": "1"}) != Headers({"a": "2"})
    assert Headers({"A": "1"}) == {"a": "1"}
