"""Rego policies from a directory, compiled with regorus and swapped in when files change.

``PolicyStore.engine()`` is called per request; at most once per ``check_interval`` it looks at
the directory's ``*.rego`` and ``*.json`` files (path, mtime, size). When they changed, it builds
a whole new engine; if that fails (a syntax error, a bad data file), the error is logged and the
previous engine keeps answering, so a broken policy file never takes the service down.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import regorus

__all__ = ["PolicyError", "PolicyStore"]

log = logging.getLogger("envoykit.filters.opa")

_Snapshot = tuple[tuple[str, int, int], ...]


class PolicyError(Exception):
    """The policy directory cannot be compiled."""


def _snapshot(directory: Path) -> _Snapshot:
    out = []
    for path in sorted(directory.rglob("*")):
        if path.suffix in (".rego", ".json") and path.is_file():
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


_Sources = tuple[tuple[str, str], ...]  # (name, text); .json names are data documents


def _read(directory: Path, snapshot: _Snapshot) -> _Sources:
    out = []
    for name, _, _ in snapshot:
        path = Path(name)
        try:
            out.append((str(path.relative_to(directory)), path.read_text()))
        except OSError as exc:
            raise PolicyError(f"{path}: {exc}") from None
    if not any(name.endswith(".rego") for name, _ in out):
        raise PolicyError(f"{directory}: no .rego policy files")
    return tuple(out)


def _engine(directory: Path, sources: _Sources) -> Any:
    engine = regorus.Engine()
    for name, text in sources:
        try:
            if name.endswith(".rego"):
                engine.add_policy(name, text)
            else:
                json.loads(text)
                engine.add_data_json(text)
        except (ValueError, RuntimeError) as exc:
            reason = f"{directory / name}: {str(exc).split('Stack backtrace')[0].strip()}"
            # Dropped here, on the thread that made it (regorus engines may not be dropped on
            # another): nothing may keep it, and the traceback raised below holds no reference.
            del engine
            raise PolicyError(reason) from None
    return engine


def _compile(directory: Path, snapshot: _Snapshot) -> tuple[_Sources, Any]:
    sources = _read(directory, snapshot)
    return sources, _engine(directory, sources)


class PolicyStore:
    def __init__(
        self, directory: Path, *, check_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = directory
        self.check_interval = check_interval
        self.clock = clock
        if not directory.is_dir():
            raise PolicyError(f"{directory}: not a directory")
        self._snapshot = _snapshot(directory)
        # regorus engines must stay on the thread that made them: the sources are shared, each
        # thread compiles its own engine from the current version.
        self._sources, engine = _compile(directory, self._snapshot)  # fails the filter's load
        self._version = 1
        # One engine per thread, in thread-local storage: used, replaced and (when the thread
        # ends) dropped only on the thread that made it, as regorus requires.
        self._local = threading.local()
        self._local.engine = (self._version, engine)
        self._checked_at = clock()
        #: How many times policies were (re)loaded, and the last reload error (tests, logs).
        self.loads = 1
        self.last_error: str | None = None

    def engine(self) -> Any:
        now = self.clock()
        if now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self.reload_if_changed()
        held: tuple[int, Any] | None = getattr(self._local, "engine", None)
        if held is None or held[0] != self._version:
            # The superseded engine is dropped here, on the thread that made it.
            held = self._local.engine = (self._version, _engine(self.directory, self._sources))
        return held[1]

    def reload_if_changed(self) -> bool:
        snapshot = _snapshot(self.directory)
        if snapshot == self._snapshot:
            return False
        self._snapshot = snapshot  # a broken version is reported once, not on every check
        try:
            sources, engine = _compile(self.directory, snapshot)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed, keeping the previous policies: %s", self.last_error)
            return False
        self._sources, self._version = sources, self._version + 1
        self._local.engine = (self._version, engine)
        self.loads += 1
        self.last_error = None
        log.info("policies reloaded from %s (%d files)", self.directory, len(snapshot))
        return True
