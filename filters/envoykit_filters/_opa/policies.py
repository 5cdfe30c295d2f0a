"""Rego policies from a directory, compiled with regorus and swapped in when files change.

``PolicyStore.engine()`` is called per request; at most once per ``check_interval`` it looks at
the directory's ``*.rego`` and ``*.json`` files (path, mtime, size). When they changed, it builds
a whole new engine; if that fails (a syntax error, a bad data file), the error is logged and the
previous engine keeps answering, so a broken policy file never takes the service down.
"""

from __future__ import annotations

import json
import logging
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


def _compile(directory: Path, snapshot: _Snapshot) -> Any:
    engine = regorus.Engine()
    policies = 0
    for name, _, _ in snapshot:
        path = Path(name)
        try:
            text = path.read_text()
            if path.suffix == ".rego":
                engine.add_policy(str(path.relative_to(directory)), text)
                policies += 1
            else:
                json.loads(text)
                engine.add_data_json(text)
        except (OSError, ValueError, RuntimeError) as exc:
            raise PolicyError(f"{path}: {str(exc).split('Stack backtrace')[0].strip()}") from None
    if not policies:
        raise PolicyError(f"{directory}: no .rego policy files")
    return engine


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
        self._engine = _compile(directory, self._snapshot)  # fails the filter's load
        self._checked_at = clock()
        #: How many times policies were (re)loaded, and the last reload error (tests, logs).
        self.loads = 1
        self.last_error: str | None = None

    def engine(self) -> Any:
        now = self.clock()
        if now - self._checked_at >= self.check_interval:
            self._checked_at = now
            self.reload_if_changed()
        return self._engine

    def reload_if_changed(self) -> bool:
        snapshot = _snapshot(self.directory)
        if snapshot == self._snapshot:
            return False
        self._snapshot = snapshot  # a broken version is reported once, not on every check
        try:
            engine = _compile(self.directory, snapshot)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("policy reload failed, keeping the previous policies: %s", exc)
            return False
        self._engine = engine
        self.loads += 1
        self.last_error = None
        log.info("policies reloaded from %s (%d files)", self.directory, len(snapshot))
        return True
