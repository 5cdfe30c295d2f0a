"""The request and response as a filter sees them.

One object per direction lives for the whole exchange, so a value a filter reads in the body
hook is the same one it saw in the headers hook. Changes are made in place (``headers.set``,
``body = ...``) and recorded; the runtime turns them into whatever its host needs.
"""

from __future__ import annotations

from ._attributes import Attributes
from ._headers import Headers
from ._metadata import Metadata, MetadataStore
from ._reply import Reply

__all__ = ["Request", "Response"]


class _Message:
    __slots__ = ("_body", "_body_changed", "attributes", "end_of_stream", "headers", "metadata", "trailers")

    def __init__(
        self,
        headers: Headers,
        *,
        attributes: Attributes,
        metadata: Metadata,
        end_of_stream: bool = False,
    ) -> None:
        self.headers = headers
        #: Trailers, once the trailers phase has them (empty before).
        self.trailers = Headers()
        #: True when no more body will follow what the current hook sees.
        self.end_of_stream = end_of_stream
        self.attributes = attributes
        #: This filter's dynamic metadata (writes go to the filter's namespace).
        self.metadata = metadata
        self._body = b""
        self._body_changed = False

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
