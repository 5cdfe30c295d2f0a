"""``WasmHost``: one proxy-wasm VM in wasmtime, started the way Envoy starts a Wasm filter.

Loading does what Envoy does when a listener with the filter arrives: compile, link the ``env``
imports and WASI, run ``_initialize`` (or ``_start``), create the root context, then
``proxy_on_vm_start`` and ``proxy_on_configure`` (false from either is a rejected config). Each
HTTP stream is then an ``HttpContext`` (stepwise) or one ``request(...)`` call (whole exchange).

Compiled modules are cached per (path, mtime, size) for the process, so a test suite compiles a
filter once however many hosts it starts; instantiation is then sub-millisecond.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import wasmtime

from .._harness import UpstreamResponse
from ._abi import ABI_MARKERS, ConfigRejected, GuestTrap, UnsupportedHostCall, WasmHostError, WasmLoadError
from ._context import HeaderArg, HttpContext, to_pairs
from ._exchange import Body, UpstreamHandler, WasmExchange, run_exchange
from ._fastcall import guest_func
from ._imports import HostCalls, VmState
from ._state import LogRecord, Metrics, PropertyValue, SharedData, property_bytes

__all__ = ["WasmHost", "PropertyKey", "compile_module", "property_path"]

PropertyKey = str | tuple[str, ...]


def _engine(metered: bool) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = metered
    return wasmtime.Engine(config)


#: Plain, and metered: counts every Wasm instruction the guest runs (wasmtime "fuel").
_ENGINES = {False: _engine(False), True: _engine(True)}
_MODULES: dict[tuple[str, int, int, bool], wasmtime.Module] = {}
#: Fuel a metered store starts with: far more than any test runs.
_FUEL = 1 << 62


def compile_module(path: str | os.PathLike[str], *, metered: bool = False) -> wasmtime.Module:
    """The compiled module for ``path``, compiled at most once per file version per process."""
    resolved = Path(path).resolve()
    try:
        info = resolved.stat()
    except OSError as exc:
        raise WasmLoadError(f"cannot read Wasm module {resolved}: {exc}") from exc
    key = (str(resolved), info.st_mtime_ns, info.st_size, metered)
    module = _MODULES.get(key)
    if module is None:
        try:
            module = wasmtime.Module.from_file(_ENGINES[metered], str(resolved))
        except wasmtime.WasmtimeError as exc:
            raise WasmLoadError(f"{resolved} is not a valid Wasm module: {exc}") from exc
        _MODULES[key] = module
    return module


def property_path(key: PropertyKey) -> bytes:
    """``"source.address"`` or ``("metadata", "filter.name")`` -> the ABI's NUL-joined path."""
    parts = key.split(".") if isinstance(key, str) else list(key)
    return b"\0".join(part.encode() for part in parts)


class WasmHost:
    """A proxy-wasm filter (``.wasm``, ABI 0.2.1) running in wasmtime, driven like Envoy drives it.

    >>> host = WasmHost.load("filter.wasm", configuration=b'{"deny": "/admin"}')  # doctest: +SKIP
    >>> host.request("GET", "/admin").status                                     # doctest: +SKIP
    403

    State that outlives a request lives here, as it does in one Envoy worker's VM: ``logs``,
    ``metrics`` (by name), ``shared_data``. One host is one VM and is not thread-safe; make
    one per test (loading is cheap once the module is compiled).
    """

    def __init__(
        self,
        module: wasmtime.Module,
        *,
        configuration: bytes | str = b"",
        vm_configuration: bytes | str = b"",
        properties: Mapping[PropertyKey, PropertyValue] | None = None,
        shared_data: SharedData | None = None,
        clock: Callable[[], int] = time.time_ns,
        root_id: int = 1,
        name: str = "wasmhost",
        metered: bool = False,
    ) -> None:
        self.name = name
        self._metered = metered
        self.vm = VmState(
            root_id=root_id,
            vm_configuration=_as_bytes(vm_configuration),
            plugin_configuration=_as_bytes(configuration),
            properties={property_path(k): property_bytes(v) for k, v in (properties or {}).items()},
            clock=clock,
            shared_data=shared_data if shared_data is not None else SharedData(),
        )
        self._next_context = root_id + 1
        self._broken: str | None = None
        self._store = wasmtime.Store(_ENGINES[metered])
        if metered:
            self._store.set_fuel(_FUEL)
        self._store.set_wasi(wasmtime.WasiConfig())  # no preopened dirs, no env, no args
        self._instance = self._instantiate(module)
        self._exports = self._instance.exports(self._store)
        self._calls: dict[str, Callable[..., int | None]] = {}
        memory = self._exports.get("memory")
        allocate = self._exports.get("proxy_on_memory_allocate") or self._exports.get("malloc")
        if not isinstance(memory, wasmtime.Memory) or not isinstance(allocate, wasmtime.Func):
            raise WasmLoadError("the module must export `memory` and `proxy_on_memory_allocate`")
        self.vm.memory, self.vm.allocate = memory, guest_func(allocate, self._store)
        self._start()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        configuration: bytes | str = b"",
        vm_configuration: bytes | str = b"",
        properties: Mapping[PropertyKey, PropertyValue] | None = None,
        **options: Any,
    ) -> WasmHost:
        """Compile (cached) and start the filter at ``path`` with its plugin ``configuration``.

        ``properties`` answer ``proxy_get_property``: keys are dotted paths (``"source.address"``,
        ``"xds.route_name"``) or tuples of segments; values are ``str``/``bytes`` (as is),
        ``int`` (8-byte little-endian, as Envoy sends integers) or ``bool``. Per-request
        attributes (``request.path``, ``request.method``, ``response.code``...) come from the
        stream itself. Other options: ``shared_data``, ``clock`` (nanoseconds), ``root_id``, and
        ``metered=True`` to count the guest's instructions (``instructions``).
        """
        return cls(
            compile_module(path, metered=bool(options.get("metered"))),
            configuration=configuration,
            vm_configuration=vm_configuration,
            properties=properties,
            name=Path(path).name,
            **options,
        )

    # -- what tests read ---------------------------------------------------------------------
    @property
    def logs(self) -> list[LogRecord]:
        """Every ``proxy_log`` call so far, oldest first."""
        return list(self.vm.logs)

    def log_messages(self, min_level: int = 0) -> list[str]:
        """The text of logs at ``min_level`` (a ``LogLevel``) or above."""
        return [r.message for r in self.vm.logs if r.level >= min_level]

    @property
    def metrics(self) -> Metrics:
        return self.vm.metrics

    @property
    def shared_data(self) -> SharedData:
        return self.vm.shared_data

    @property
    def tick_period_ms(self) -> int:
        """What the filter last asked for with ``proxy_set_tick_period_milliseconds`` (0: none)."""
        return self.vm.tick_period_ms

    @property
    def instructions(self) -> int:
        """Wasm instructions the guest has run so far (start-up included): a deterministic cost
        measure for comparing filter versions, independent of machine load. Needs ``metered=True``."""
        if not self._metered:
            raise WasmHostError("load the module with metered=True to count instructions")
        return _FUEL - self._store.get_fuel()

    @property
    def broken(self) -> bool:
        """True once the guest trapped: like a crashed Envoy VM, it takes no more calls."""
        return self._broken is not None

    @property
    def root_id(self) -> int:
        return self.vm.root_id

    # -- streams -----------------------------------------------------------------------------
    def http_context(self, properties: Mapping[PropertyKey, PropertyValue] | None = None) -> HttpContext:
        """A new stream (``proxy_on_context_create``) to drive hook by hook; call ``finish()``."""
        return HttpContext(self, properties)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: HeaderArg | None = None,
        body: Body = b"",
        trailers: Mapping[str, str] | None = None,
        authority: str = "example.com",
        upstream: UpstreamHandler | None = None,
        properties: Mapping[PropertyKey, PropertyValue] | None = None,
    ) -> WasmExchange:
        """Send one request through the filter to a fake upstream and back, as Envoy would.

        ``body`` is bytes (one data frame) or an iterable of chunks (one body hook call each,
        unless the filter buffers); ``upstream`` is an ``UpstreamResponse`` or a function of
        what the upstream received. ``properties`` add per-request properties.
        """
        pseudo = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        request_headers = [*to_pairs(pseudo), *to_pairs(headers)]
        ctx = self.http_context(properties)
        return run_exchange(ctx, request_headers, body, trailers, upstream or UpstreamResponse())

    # -- driving the root context ------------------------------------------------------------
    def tick(self) -> None:
        """Run ``proxy_on_tick`` once (Envoy calls it every ``tick_period_ms``)."""
        self.call("proxy_on_tick", self.vm.root_id)

    def new_context_id(self) -> int:
        context_id = self._next_context
        self._next_context += 1
        return context_id

    def has_export(self, name: str) -> bool:
        return isinstance(self._exports.get(name), wasmtime.Func)

    def call(self, hook: str, *args: int, default: int = 0) -> int:
        """Call the guest's export ``hook``; ``default`` when the module does not export it
        (Envoy treats a missing hook as a no-op). A trap makes the host unusable, as a VM
        that trapped is in Envoy."""
        if self._broken is not None:
            raise WasmHostError(f"the VM is unusable: it trapped earlier in {self._broken}")
        func = self._calls.get(hook)
        if func is None:
            export = self._exports.get(hook)
            if not isinstance(export, wasmtime.Func):
                return default
            func = self._calls[hook] = guest_func(export, self._store)
        try:
            result = func(self._store, *args)
        except WasmHostError:  # raised by a host function (unsupported import, bad pointer)
            self._broken = hook
            raise
        except wasmtime.Trap as trap:
            self._broken = hook
            raise GuestTrap(hook, trap.message) from trap
        except wasmtime.WasmtimeError as exc:
            self._broken = hook
            raise GuestTrap(hook, str(exc)) from exc
        return int(result) if isinstance(result, int) else default

    # -- start-up ----------------------------------------------------------------------------
    def _instantiate(self, module: wasmtime.Module) -> wasmtime.Instance:
        exports = {e.name for e in module.exports}
        if not exports.intersection(ABI_MARKERS):
            raise WasmLoadError(
                "Missing or unknown Proxy-Wasm ABI version (the module exports none of "
                f"{', '.join(ABI_MARKERS)})"
            )
        linker = wasmtime.Linker(_ENGINES[self._metered])
        linker.define_wasi()
        table = HostCalls(self.vm).table()
        for imp in module.imports:
            if imp.module == "wasi_snapshot_preview1":
                continue
            ty = imp.type
            if not isinstance(ty, wasmtime.FuncType) or imp.name is None:
                raise WasmLoadError(f"unsupported import {imp.module}.{imp.name} (not a function)")
            impl = table.get(imp.name) if imp.module == "env" else None
            if impl is not None:
                arity = len(inspect.signature(impl).parameters) - 1  # bound method: minus caller
                if arity != len(ty.params):
                    raise WasmLoadError(
                        f"import env.{imp.name} declares {len(ty.params)} parameters; the ABI has {arity}"
                    )
                linker.define_func(imp.module, imp.name, ty, impl, access_caller=True)
            else:
                linker.define_func(imp.module, imp.name, ty, _trap(imp.module, imp.name))
        try:
            return linker.instantiate(self._store, module)
        except wasmtime.WasmtimeError as exc:
            raise WasmLoadError(f"cannot instantiate the module: {exc}") from exc

    def _start(self) -> None:
        for init in ("_initialize", "_start"):
            if self.has_export(init):
                self.call(init)
                break
        root = self.vm.root_id
        self.call("proxy_on_context_create", root, 0)
        if not self.call("proxy_on_vm_start", root, len(self.vm.vm_configuration), default=1):
            raise ConfigRejected(f"{self.name}: proxy_on_vm_start returned false (VM configuration rejected)")
        if not self.call("proxy_on_configure", root, len(self.vm.plugin_configuration), default=1):
            logs = "; ".join(r.message for r in self.vm.logs) or "no log"
            raise ConfigRejected(f"{self.name}: proxy_on_configure rejected the configuration ({logs})")


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _trap(module: str, name: str) -> Callable[..., Any]:
    def stub(*args: Any) -> Any:
        raise UnsupportedHostCall(module, name)

    return stub
