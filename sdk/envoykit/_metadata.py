"""Dynamic metadata: small JSON-like values attached to the request inside Envoy.

Envoy keeps dynamic metadata per request in namespaces. Access logs print it
(``%DYNAMIC_METADATA(envoykit.api-key:client)%``), later filters and routes can read it.
Each filter writes only into its own namespace (``envoykit.<filter name>`` unless configured),
which keeps filters from clobbering each other; any namespace can be read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ._errors import MetadataError

__all__ = ["Metadata", "MetadataStore"]


def _check_json_like(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_like(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise MetadataError(f"{where}: metadata keys must be str, got {k!r}")
            _check_json_like(item, f"{where}.{k}")
        return
    raise MetadataError(
        f"{where}: {type(value).__name__} cannot be stored in Envoy metadata "
        "(use str, int, float, bool, None, list or dict)"
    )


class MetadataStore:
    """All namespaces of one request, plus which ones filters changed (for runtimes to emit)."""

    __slots__ = ("_data", "_dirty")

    def __init__(self, received: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._data: dict[str, dict[str, Any]] = (
            {ns: dict(values) for ns, values in received.items()} if received else {}
        )
        self._dirty: set[str] = set()

    def namespace(self, name: str) -> dict[str, Any]:
        return self._data.setdefault(name, {})

    def read(self, namespace: str) -> Mapping[str, Any]:
        return self._data.get(namespace, {})

    def mark(self, namespace: str) -> None:
        self._dirty.add(namespace)

    def take_changes(self, *, deep_copy: bool = True) -> dict[str, dict[str, Any]]:
        """Full current contents of each namespace changed since the last call.

        Whole namespaces are returned because Envoy merges dynamic metadata per top-level key:
        sending only the changed keys of a nested value would drop its other keys.
        ``deep_copy=False`` (shallow copies of the namespaces) is for a caller that only reads
        the values, e.g. to serialize them right away.
        """
        if not self._dirty:
            return {}
        if deep_copy:
            changed = {ns: copy.deepcopy(self._data.get(ns, {})) for ns in sorted(self._dirty)}
        else:
            changed = {ns: dict(self._data.get(ns, {})) for ns in sorted(self._dirty)}
        self._dirty.clear()
        return changed

    def snapshot(self) -> Mapping[str, Mapping[str, Any]]:
        return copy.deepcopy(self._data)

    def checkpoint(self, namespace: str) -> tuple[dict[str, Any], bool]:
        return dict(self._data.get(namespace, {})), namespace in self._dirty

    def rollback(self, namespace: str, snap: tuple[dict[str, Any], bool]) -> None:
        self._data[namespace] = snap[0]
        if not snap[1]:
            self._dirty.discard(namespace)


class Metadata:
    """A filter's view of the request's dynamic metadata: writes go to its own namespace.

    >>> md = Metadata(MetadataStore(), "envoykit.demo")
    >>> md["user"] = "alice"; md.get("user")
    'alice'
    >>> md.read("envoykit.demo")["user"]
    'alice'
    """

    __slots__ = ("_store", "namespace")

    def __init__(self, store: MetadataStore, namespace: str) -> None:
        self._store = store
        self.namespace = namespace

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __getitem__(self, key: str) -> Any:
        return self._store.read(self.namespace)[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store.read(self.namespace)

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.read(self.namespace).get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-like) under ``key`` in this filter's namespace."""
        if not isinstance(key, str) or not key:
            raise MetadataError(f"metadata key must be a non-empty str, got {key!r}")
        _check_json_like(value, f"{self.namespace}.{key}")
        self._store.namespace(self.namespace)[key] = value
        self._store.mark(self.namespace)

    def delete(self, key: str) -> None:
        if self._store.namespace(self.namespace).pop(key, None) is not None:
            self._store.mark(self.namespace)

    def read(self, namespace: str) -> Mapping[str, Any]:
        """Read any namespace, e.g. ``"envoy.filters.http.jwt_authn"`` or another filter's."""
        return self._store.read(namespace)
