"""The decision log: one JSON line per ext_authz decision, with secrets redacted.

Each line says what was decided (``allow``/``deny``), the status, which filter decided and why
(its reply's details and the metadata it wrote), and which request it was about (method, path,
host, client IP, request id). Credentials never reach the log: ``authorization``, cookies, API-key
headers and anything that looks like a JWT are replaced by ``[redacted]``, as are query
parameters and metadata keys named like secrets (``token``, ``password``, ``secret``...).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

from .._headers import Headers

__all__ = ["DecisionLog", "redact_path", "redact_value", "REDACTED"]

REDACTED = "[redacted]"
#: Headers whose values are credentials.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-amz-security-token",
    }
)
_SECRET_NAME = re.compile(r"(token|secret|passw|api[-_]?key|credential|cookie|signature|authorization)", re.I)
#: A JWT/JWS anywhere in a value: three base64url segments, the first one a JSON object.
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


def redact_value(key: str, value: Any) -> Any:
    """``value`` with secrets replaced; ``key`` is its name (header, parameter or metadata key)."""
    if _SECRET_NAME.search(key):
        return REDACTED
    if isinstance(value, str):
        return _JWT.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(key, v) for v in value]
    return value


def redact_path(path: str) -> str:
    """The path with secret-looking query parameters (``access_token=...``) redacted."""
    base, sep, query = path.partition("?")
    if not sep:
        return _JWT.sub(REDACTED, path)
    pairs = [
        (k, REDACTED if _SECRET_NAME.search(k) else _JWT.sub(REDACTED, v))
        for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{base}?{urlencode(pairs, safe='[]/:')}"


class DecisionLog:
    """Writes decision records as JSON lines to ``stream`` (or a file path, or ``"-"`` for stdout).

    Thread-safe (the thread-pool server logs from several threads). ``include_headers`` adds the
    request headers (redacted); ``allowed`` false logs denials only.
    """

    def __init__(
        self, target: str | IO[str] = "-", *, include_headers: bool = False, allowed: bool = True
    ) -> None:
        self._owned = False
        if isinstance(target, str):
            if target == "-":
                self.stream: IO[str] = sys.stdout
            else:
                self.stream = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in close()
                self._owned = True
                # Closed with the log when nobody calls close() (servers have no close hook).
                weakref.finalize(self, self.stream.close)
        else:
            self.stream = target
        self.include_headers = include_headers
        self.allowed = allowed
        self._lock = threading.Lock()

    def record(
        self,
        *,
        chain: str,
        decision: str,
        status: int,
        filter_name: str | None,
        details: str,
        headers: Headers,
        client_ip: str | None,
        request_id: str | None,
        metadata: Mapping[str, Mapping[str, Any]],
    ) -> None:
        if decision == "allow" and not self.allowed:
            return
        entry: dict[str, Any] = {
            "time": round(time.time(), 3),
            "chain": chain,
            "decision": decision,
            "status": status,
            "filter": filter_name,
            "details": details,
            "method": headers.get(":method"),
            "path": redact_path(headers.get(":path") or ""),
            "host": headers.get(":authority"),
            "client_ip": client_ip,
            "request_id": request_id,
        }
        if metadata:
            entry["metadata"] = {ns: redact_value(ns, values) for ns, values in metadata.items()}
        if self.include_headers:
            entry["headers"] = {
                name: REDACTED if name in SECRET_HEADERS else redact_value(name, value)
                for name, value in headers.items()
                if not name.startswith(":")
            }
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self._owned:
            self.stream.close()
