"""Python half of the shim, frozen into every module and imported before the filter's entry.

Why: WASI stdout/stderr reach Envoy's log one ``fd_write`` at a time, so a traceback printed by
CPython arrives as fragments (``SystemError``, ``: ``, the message...). Routing ``sys.stdout`` /
``sys.stderr`` through ``proxy_log`` line by line keeps each log entry whole: ``print`` logs at
info, errors and tracebacks at error.
"""

import sys

import _envoykit_host

_INFO = 2
_ERROR = 4


class HostLog:
    """A minimal text stream that sends complete lines to Envoy's log."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, level: int) -> None:
        self.level = level
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            _envoykit_host.log(self.level, line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            _envoykit_host.log(self.level, self._pending)
            self._pending = ""

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


sys.stdout = HostLog(_INFO)
sys.stderr = HostLog(_ERROR)
