"""The one header-map type filters see.

Envoy hands headers over as bytes. Filters mostly want ``str``, occasionally need the exact
bytes, and must never lose a value that is not valid UTF-8. ``Headers`` stores every value as a
``str`` decoded with latin-1 (the ASGI convention): that mapping is lossless both ways, so
``get_bytes`` returns exactly what Envoy sent. Names are lower-cased (HTTP/2 rules) and a name
may carry several values.

Every change is also recorded by name, so a runtime can turn "what the filters did" into the
smallest header mutation for Envoy without diffing.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter

from ._errors import HeaderError

__all__ = ["Headers", "HeaderValue", "PSEUDO_HEADERS"]

HeaderValue = str | bytes

#: Pseudo-headers Envoy exposes to filters. They can be read and set, never removed.
PSEUDO_HEADERS = frozenset({":method", ":path", ":authority", ":scheme", ":status", ":protocol"})

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

HeaderInput = Mapping[str, HeaderValue] | Iterable[tuple[str | bytes, HeaderValue]]

#: ``key in map(_NAME_OF, items)``: whether a name is present, scanned in C (inside Envoy's Wasm
#: VM a Python loop costs hundreds of instructions per header, a generator thousands).
_NAME_OF = itemgetter(0)


#: Valid names seen so far, as given -> lower-cased: filters use a handful of names over and over,
#: and validating one costs a per-character loop (slow inside Envoy's Wasm VM). Bounded.
_NAMES: dict[str, str] = {}
_NAMES_MAX = 4096


def _name(name: str | bytes) -> str:
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    known = _NAMES.get(name)
    if known is not None:
        return known
    lowered = name.lower()
    body = lowered[1:] if lowered.startswith(":") else lowered
    if not body or not _TOKEN.issuperset(body):
        raise HeaderError(f"invalid header name {name!r}")
    if lowered.startswith(":") and lowered not in PSEUDO_HEADERS:
        raise HeaderError(f"unknown pseudo-header {name!r}")
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = lowered
    return lowered


#: Valid ``str`` values seen so far (filters set the same few values over and over). Bounded.
_VALUES: dict[str, None] = {}
_VALUES_MAX = 4096


def _value(value: HeaderValue) -> str:
    if value in _VALUES and type(value) is str:
        return value
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str):
        text = value
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise HeaderError(
                f"header value {value!r} is not latin-1; pass bytes (e.g. value.encode()) instead"
            ) from None
    else:
        raise HeaderError(f"header value must be str or bytes, not {type(value).__name__}")
    if "\r" in text or "\n" in text or "\x00" in text:
        raise HeaderError(f"header value {text!r} contains CR, LF or NUL")
    if len(_VALUES) < _VALUES_MAX and len(text) <= 256:
        _VALUES[text] = None
    return text


class Headers:
    """Case-insensitive, ordered, multi-valued HTTP headers, pseudo-headers included.

    >>> h = Headers({"Content-Type": "text/plain", ":path": "/x"})
    >>> h["content-type"], h.get(":path")
    ('text/plain', '/x')
    >>> h.add("set-cookie", "a=1"); h.add("set-cookie", "b=2"); h.get_all("set-cookie")
    ['a=1', 'b=2']
    """

    __slots__ = ("_items", "_readonly_reason", "_touched")

    def __init__(self, items: HeaderInput | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        self._touched: set[str] = set()
        self._readonly_reason: str | None = None
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            self._items = [(_name(k), _value(v)) for k, v in pairs]

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap already-normalised pairs (from a runtime) without re-validating them."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._touched = set()
        headers._readonly_reason = None
        return headers

    # -- reading ---------------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name``, or ``default``."""
        key = name.lower()
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self._items if k == key]

    def get_bytes(self, name: str) -> bytes | None:
        """First value of ``name`` as the exact bytes Envoy sent (the bytes escape hatch)."""
        value = self.get(name)
        return None if value is None else value.encode("latin-1")

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name.lower() in map(_NAME_OF, self._items)

    def __iter__(self) -> Iterator[str]:
        """Distinct names, in first-seen order."""
        seen: dict[str, None] = {}
        for k, _ in self._items:
            seen.setdefault(k, None)
        return iter(seen)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair in order, repeated names included."""
        return list(self._items)

    def raw_items(self) -> list[tuple[bytes, bytes]]:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._items]

    def to_dict(self) -> dict[str, str]:
        """Names to values; repeated values joined with ``", "`` (cookies joined with ``"; "``)."""
        out: dict[str, str] = {}
        for k, v in self._items:
            if k in out:
                out[k] += ("; " if k == "cookie" else ", ") + v
            else:
                out[k] = v
        return out

    # -- writing ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._readonly_reason is not None:
            raise HeaderError(f"headers are read-only here: {self._readonly_reason}")

    def set(self, name: str, value: HeaderValue) -> None:
        """Replace every value of ``name`` with ``value`` (added if absent)."""
        if self._readonly_reason is not None:
            self._check_writable()
        # ``_name``/``_value``'s caches of names and values already checked, inline (hot path).
        key = _NAMES.get(name)  # bytes and unknown names: None, then ``_name`` checks them
        if key is None:
            key = _name(name)
        text = value if type(value) is str and value in _VALUES else _value(value)
        items = self._items
        if key in map(_NAME_OF, items):
            self._items = items = [(k, v) for k, v in items if k != key]
        items.append((key, text))
        self._touched.add(key)

    def add(self, name: str, value: HeaderValue) -> None:
        """Append one more value for ``name``."""
        if self._readonly_reason is not None:
            self._check_writable()
        key = _NAMES.get(name)  # bytes and unknown names: None, then ``_name`` checks them
        if key is None:
            key = _name(name)
        text = value if type(value) is str and value in _VALUES else _value(value)
        if key.startswith(":") and key in self:
            raise HeaderError(f"pseudo-header {key} has one value; use set()")
        self._items.append((key, text))
        self._touched.add(key)

    def setdefault(self, name: str, value: HeaderValue) -> str:
        """Set ``name`` only if absent; return its (first) value either way."""
        current = self.get(name)
        if current is not None:
            return current
        self.set(name, value)
        return _value(value)

    def remove(self, name: str) -> bool:
        """Remove every value of ``name``. Returns whether anything was removed."""
        if self._readonly_reason is not None:
            self._check_writable()
        key = name.lower()
        if key.startswith(":"):
            raise HeaderError(f"pseudo-header {key} cannot be removed")
        self._touched.add(key)
        items = self._items
        if key not in map(_NAME_OF, items):
            return False
        self._items = [(k, v) for k, v in items if k != key]
        return True

    def __setitem__(self, name: str, value: HeaderValue) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def update(self, other: HeaderInput) -> None:
        """``set`` each pair of ``other`` (a later pair for the same name wins)."""
        pairs = other.items() if isinstance(other, Mapping) else other
        for k, v in pairs:
            self.set(k.decode("latin-1") if isinstance(k, bytes) else k, v)

    # -- for runtimes ----------------------------------------------------------------------
    @property
    def touched(self) -> frozenset[str]:
        """Names set, added or removed since creation (or the last ``clear_touched``)."""
        return frozenset(self._touched)

    def clear_touched(self) -> None:
        self._touched.clear()

    def freeze(self, reason: str) -> None:
        """Make further writes raise ``HeaderError`` explaining ``reason``."""
        self._readonly_reason = reason

    def unfreeze(self) -> None:
        self._readonly_reason = None

    def checkpoint(self) -> tuple[list[tuple[str, str]], builtins.set[str]]:
        return list(self._items), set(self._touched)

    def rollback(self, snapshot: tuple[list[tuple[str, str]], builtins.set[str]]) -> None:
        self._items, self._touched = list(snapshot[0]), set(snapshot[1])

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items))

    # -- dunder ----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._items) == sorted(other._items)
        if isinstance(other, Mapping):
            return self == Headers(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
