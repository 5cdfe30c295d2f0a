"""The request and response as a filter sees them.

One object per direction lives for the whole exchange, so a value a filter reads in the body
hook is the same one it saw in the headers hook. Changes are made in place (``headers.set``,
``body = ...``) and recorded; the runtime turns them into whatever its host needs.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._attributes import Attributes
from ._headers import Headers
from ._metadata import Metadata, MetadataStore
from ._reply import Reply

__all__ = ["Request", "Response"]


_new = object.__new__


class _Owner(Protocol):
    """What a lazily made message asks its stream for (see ``Stream._start_request``)."""

    _decode: Any
    _make_headers: Any
    attributes: Attributes

    def _metadata_view(self) -> Metadata: ...


class _Message:
    # Runtimes on a hot path (inside Envoy's Wasm VM every object and call costs thousands of
    # instructions) make messages with ``Stream._start_request``: ``headers`` can stay the host's raw
    # bytes until a hook reads them, and ``trailers``, ``attributes`` and ``metadata`` are made
    # on first read, so a hook that never reads them never pays for them.
    __slots__ = (
        "_attributes",
        "_body",
        "_body_changed",
        "_headers",
        "_metadata",
        "_owner",
        "_raw_headers",
        "_readonly",
        "_trailers",
        "end_of_stream",
    )

    def __init__(
        self,
        headers: Headers,
        *,
        attributes: Attributes,
        metadata: Metadata,
        end_of_stream: bool = False,
    ) -> None:
        self._headers: Headers | None = headers
        self._trailers: Headers | None = Headers()
        #: True when no more body will follow what the current hook sees.
        self.end_of_stream = end_of_stream
        self._attributes: Attributes | None = attributes
        self._metadata: Metadata | None = metadata
        self._body = b""
        self._body_changed = False
        self._owner: _Owner | None = None
        self._raw_headers: object = None
        self._readonly: str | None = None

    @property
    def headers(self) -> Headers:
        """The message's headers (pseudo-headers included)."""
        headers = self._headers
        if headers is None:
            raw, self._raw_headers = self._raw_headers, None
            make = self._owner._make_headers  # type: ignore[union-attr]
            if make is not None:  # the runtime builds it in one call (the Wasm shim, in C)
                headers = self._headers = make(raw, self._readonly)
                return headers  # type: ignore[no-any-return]
            decode = self._owner._decode  # type: ignore[union-attr]
            headers = self._headers = _new(Headers)  # Headers._trusted, inline
            headers._items = raw if decode is None else decode(raw)  # type: ignore[assignment]
            headers._touched = set()
            headers._readonly_reason = self._readonly
        return headers

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._headers = value
        self._raw_headers = None

    @property
    def trailers(self) -> Headers:
        """Trailers, once the trailers phase has them (empty before)."""
        trailers = self._trailers
        if trailers is None:
            trailers = self._trailers = Headers()
        return trailers

    @trailers.setter
    def trailers(self, value: Headers) -> None:
        self._trailers = value

    @property
    def attributes(self) -> Attributes:
        attributes = self._attributes
        if attributes is None:
            attributes = self._attributes = self._owner.attributes  # type: ignore[union-attr]
        return attributes

    @attributes.setter
    def attributes(self, value: Attributes) -> None:
        self._attributes = value

    @property
    def metadata(self) -> Metadata:
        """This filter's dynamic metadata (writes go to the filter's namespace)."""
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = self._owner._metadata_view()  # type: ignore[union-attr]
        return metadata

    @metadata.setter
    def metadata(self, value: Metadata) -> None:
        self._metadata = value

    def _freeze_headers(self, reason: str | None) -> None:
        """``headers.freeze(reason)`` (``None``: unfreeze), without decoding headers not yet read."""
        headers = self._headers
        if headers is None:
            self._readonly = reason
        else:
            headers._readonly_reason = reason

    @property
    def body(self) -> bytes:
        """In a body hook: the whole body (buffered) or the current chunk (streamed)."""
        return self._body

    @body.setter
    def body(self, value: bytes | str) -> None:
        self._body = value.encode() if isinstance(value, str) else bytes(value)
        self._body_changed = True

    @property
    def body_changed(self) -> bool:
        return self._body_changed

    def _load_body(self, data: bytes, end_of_stream: bool) -> None:
        """Runtime side: hand the next body (or chunk) to the filters."""
        self._body = data
        self._body_changed = False
        self.end_of_stream = end_of_stream


class Request(_Message):
    """The downstream request. Pseudo-headers are in ``headers`` (``:method``, ``:path``...)."""

    __slots__ = ()

    @property
    def method(self) -> str:
        return self.headers.get(":method") or ""

    @property
    def path(self) -> str:
        """The full ``:path``, query string included."""
        return self.headers.get(":path") or ""

    @path.setter
    def path(self, value: str) -> None:
        self.headers.set(":path", value)

    @property
    def path_only(self) -> str:
        """``:path`` without the query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> str:
        """The raw query string (after ``?``), or ``""``."""
        return self.path.partition("?")[2]

    @property
    def authority(self) -> str:
        return self.headers.get(":authority") or self.headers.get("host") or ""

    host = authority

    @property
    def scheme(self) -> str:
        return self.headers.get(":scheme") or ""


class Response(_Message):
    """The response on its way to the client: from upstream, or a local reply."""

    __slots__ = ("is_local_reply", "reply", "request")

    def __init__(
        self,
        headers: Headers,
        *,
        request: Request,
        attributes: Attributes,
        metadata: Metadata,
        end_of_stream: bool = False,
        is_local_reply: bool = False,
    ) -> None:
        super().__init__(headers, attributes=attributes, metadata=metadata, end_of_stream=end_of_stream)
        #: The request as it left the request phase (read-only here).
        self.request = request
        #: True when a filter answered instead of the upstream.
        self.is_local_reply = is_local_reply
        #: The ``Reply`` a local reply came from (its ``details``/``grpc_status`` go to the host).
        self.reply: Reply | None = None

    @property
    def status(self) -> int:
        value = self.headers.get(":status")
        return int(value) if value and value.isdigit() else 0

    @status.setter
    def status(self, value: int) -> None:
        self.headers.set(":status", str(int(value)))


def new_metadata_view(store: MetadataStore, namespace: str = "envoykit") -> Metadata:
    return Metadata(store, namespace)
