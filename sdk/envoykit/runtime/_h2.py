"""The native HTTP/2 gRPC front end (the rate-limit service's ``--server h2``, the sidecar's
``server: h2``): build, load, serve.

``_h2server.c`` is a small CPython extension: one thread runs an epoll loop over nghttp2 (the
system ``libnghttp2.so.14``, loaded with ``dlopen``) and hands every complete unary call and
every bidi-stream event of a loop iteration to Python in one call each, so a whole batch is
handled together (one Redis pipeline for all rate-limit calls) and grpcio's per-call and
per-message machinery (~150-200 µs per call, ~600 µs per ext_proc stream here) is gone.

The extension is compiled on first use with ``zig cc`` (the ``ziglang`` wheel, already used for
Wasm) into ``$ENVOYKIT_CACHE/h2/<key>/`` (default ``~/.cache/envoykit``), the key being
a sha256 of the source, the compiler flags, zig's version and this interpreter's ABI; later
starts load the cached build. Written to a temporary name and renamed, so concurrent first starts
are safe. ``H2BuildError`` says what is missing (``ziglang``, ``Python.h``, ``libnghttp2``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import platform
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from grpc_health.v1 import health_pb2

from .._errors import EnvoykitError
from ._address import ListenAddress
from ._health import HealthState

__all__ = [
    "CANCEL",
    "HALF_CLOSE",
    "MESSAGE",
    "OPEN",
    "H2BuildError",
    "H2Server",
    "StreamAnswer",
    "StreamEvent",
    "StreamHandler",
    "HEALTH_CHECK_PATH",
    "build_extension",
    "health_answer",
    "listen_socket",
    "load_extension",
]

MODULE = "_envoykit_h2"
SOURCE = Path(__file__).with_name("_h2server.c")
#: ``-mcpu=baseline``: zig targets the build machine's CPU by default; a cache shared between
#: machines must not hold code for a newer CPU than the one loading it.
CFLAGS = ("-shared", "-fPIC", "-O2", "-mcpu=baseline", "-s", "-Wall", "-Wextra", "-Werror", "-fno-ident")
LIBS = ("-ldl",)
#: One answer per call: the serialized response, or a gRPC (status code, message).
Answer = bytes | tuple[int, str]
Handler = Callable[[list[tuple[bytes, bytes]]], list[Answer]]
#: Stream event kinds: OPEN (data: (path, metadata value or None)), MESSAGE (data: the
#: message), HALF_CLOSE (the client is done sending), CANCEL (the stream is gone: forget it).
OPEN, MESSAGE, HALF_CLOSE, CANCEL = 0, 1, 2, 3
#: ``(sid, kind, data)``; sid identifies the stream until it ends.
StreamEvent = tuple[int, int, Any]
#: ``(sid, message or None, finish)``: finish None keeps the stream open; a gRPC status code or
#: ``(code, message)`` ends it after the message.
StreamAnswer = tuple[int, bytes | None, int | tuple[int, str] | None]
StreamHandler = Callable[[list[StreamEvent]], list[StreamAnswer]]

log = logging.getLogger("envoykit.runtime")
_lock = threading.Lock()
_module: ModuleType | None = None


class H2BuildError(EnvoykitError):
    """The native HTTP/2 server cannot be built or loaded here (grpcio's servers still work)."""


def _cache_root() -> Path:
    env = os.environ.get("ENVOYKIT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "envoykit"


def _zig() -> list[str]:
    if importlib.util.find_spec("ziglang") is None:
        raise H2BuildError("building the h2 server needs the `ziglang` package: pip install ziglang")
    return [sys.executable, "-m", "ziglang"]


def _key(zig: list[str], include: str) -> str:
    version = subprocess.run([*zig, "version"], capture_output=True, text=True, timeout=120, check=False)
    if version.returncode != 0:
        raise H2BuildError(f"`zig version` failed: {version.stderr.strip()}")
    digest = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(CFLAGS + LIBS).encode(),
        version.stdout.strip().encode(),
        (sysconfig.get_config_var("EXT_SUFFIX") or "").encode(),
        platform.machine().encode(),
        sys.version.encode(),
        include.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:32]


def build_extension(force: bool = False) -> Path:
    """The compiled extension for this interpreter (compiled now unless cached)."""
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise H2BuildError(f"Python.h not found in {include} (install python3-dev)")
    zig = _zig()
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    out_dir = _cache_root() / "h2" / _key(zig, include)
    out = out_dir / f"{MODULE}{suffix}"
    if out.is_file() and not force:
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(_cache_root() / "zig"))
    with tempfile.TemporaryDirectory(prefix="envoykit-h2-", dir=out_dir) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [*zig, "cc", *CFLAGS, f"-I{include}", "-o", str(tmp_out), str(SOURCE), *LIBS]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
        if proc.returncode != 0:
            raise H2BuildError(f"compiling {SOURCE.name} failed:\n{proc.stderr.strip()[-4000:]}")
        os.replace(tmp_out, out)
    return out


def load_extension() -> ModuleType:
    """Build (if needed) and import the extension; ``H2BuildError`` says why it cannot."""
    global _module
    with _lock:
        if _module is None:
            path = build_extension()
            loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
            spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
            assert spec is not None
            try:
                module = importlib.util.module_from_spec(spec)
                loader.exec_module(module)
            except ImportError as exc:  # libnghttp2 missing or too old
                raise H2BuildError(str(exc)) from None
            _module = module
        return _module


class H2Server:
    """``handler`` (unary calls) and ``stream_handler`` (events of the ``streaming`` methods)
    served on the listening socket ``sock`` by the native loop in its own thread.

    ``unary``: the known unary paths (others are answered UNIMPLEMENTED in C); None passes every
    unary path to ``handler``. ``metadata``: a request header (lowercase) whose value comes with
    each stream's OPEN event.
    """

    def __init__(
        self,
        sock: Any,
        handler: Handler,
        *,
        max_message: int = 4 * 1024 * 1024,
        stream_handler: StreamHandler | None = None,
        streaming: tuple[bytes, ...] = (),
        unary: tuple[bytes, ...] | None = None,
        metadata: bytes = b"",
        name: str = "envoykit-h2",
    ) -> None:
        self.sock = sock
        self._native: Any = load_extension().Server(
            sock.fileno(), handler, max_message, stream_handler, streaming, unary, metadata
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.done = threading.Event()

    def _run(self) -> None:
        try:
            self._native.serve()
        except BaseException:  # the loop's thread must not die silently
            log.exception("the h2 server loop failed; no more calls are served")
        finally:
            self.done.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace: float) -> None:
        """GOAWAY every connection, finish the calls in flight (``grace`` seconds at most)."""
        self._native.shutdown(grace)
        self.done.wait(grace + 10.0)
        self.sock.close()

    def stats(self) -> dict[str, int]:
        return dict(self._native.stats())


HEALTH_CHECK_PATH = b"/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_answer(health: HealthState, message: bytes) -> Answer:
    """The gRPC health ``Check`` answer for a serialized ``HealthCheckRequest``."""
    try:
        service = health_pb2.HealthCheckRequest.FromString(message).service
    except Exception:  # noqa: BLE001 - any undecodable message
        return (13, "cannot decode the HealthCheckRequest")
    if service not in health.services:
        return (5, "unknown service")
    status = _SERVING if health.serving else _NOT_SERVING
    answer: bytes = health_pb2.HealthCheckResponse(status=status).SerializeToString()
    return answer


def listen_socket(address: ListenAddress, who: str) -> socket.socket:
    """A listening socket for the h2 server (TCP, dual-stack ``[::]``, or a unix path)."""
    if address.path is not None:
        path = Path(address.path)
        if path.is_socket():
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(address.path)
        except OSError as exc:
            sock.close()
            raise OSError(f"{who} cannot listen on {address.target}: {exc}") from None
        sock.listen(1024)
        return sock
    host = address.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    dualstack = family == socket.AF_INET6 and host == "::" and socket.has_dualstack_ipv6()
    try:
        return socket.create_server(
            (host, address.port), family=family, backlog=1024, dualstack_ipv6=dualstack
        )
    except OSError as exc:
        raise OSError(f"{who} cannot listen on {address.target}: {exc}") from None
