"""Calling guest exports without wasmtime-py's per-call type plumbing.

``wasmtime.Func.__call__`` re-reads the function's type through ctypes and converts every
argument via ``Val`` on each call: about 20 µs of the ~24 µs a call costs, paid several times
per request (each hook, and each ``proxy_on_memory_allocate`` when the host returns data). The
ABI only passes i32/i64, so the type is read once here and arguments are written straight into
``wasmtime_val_t``. This uses wasmtime-py internals (``_ffi``, ``enter_wasm``, which also turns
traps and host-function exceptions into Python exceptions exactly as ``Func.__call__`` does);
if they are missing (another wasmtime-py version), ``guest_func`` falls back to ``Func``.
"""

from __future__ import annotations

from collections.abc import Callable
from ctypes import byref
from typing import Any

import wasmtime

__all__ = ["guest_func"]

try:  # wasmtime-py internals, verified with 50.0.1
    from wasmtime import _ffi as _raw
    from wasmtime._func import enter_wasm as _enter_wasm

    _I32: int = _raw.WASMTIME_I32.value
    _I64: int = _raw.WASMTIME_I64.value
    _FAST = True
except (ImportError, AttributeError):  # pragma: no cover - other wasmtime-py versions
    _FAST = False


def guest_func(func: wasmtime.Func, store: wasmtime.Store) -> Callable[..., int | None]:
    """A callable ``f(store_or_caller, *ints) -> int | None`` for an export taking i32/i64."""
    ty = func.type(store)
    kinds: list[int] = []
    for param in ty.params:
        if param == wasmtime.ValType.i32():
            kinds.append(0)
        elif param == wasmtime.ValType.i64():
            kinds.append(1)
        else:
            return _slow(func)
    results = ty.results
    if not _FAST or len(results) > 1 or (results and results[0] != wasmtime.ValType.i32()):
        return _slow(func)
    count, returns = len(kinds), len(results)
    raw_func = func._func

    def call(store: Any, *args: int) -> int | None:
        if len(args) != count:
            raise TypeError(f"expected {count} arguments, got {len(args)}")
        params = (_raw.wasmtime_val_t * count)()
        for slot, (kind, value) in enumerate(zip(kinds, args, strict=True)):
            if kind:
                params[slot].kind = _I64  # type: ignore[assignment]  # ctypes takes an int
                params[slot].of.i64 = value
            else:
                params[slot].kind = _I32  # type: ignore[assignment]
                params[slot].of.i32 = value
        out = (_raw.wasmtime_val_t * returns)()
        with _enter_wasm(store) as trap:
            error = _raw.wasmtime_func_call(
                store._context(), byref(raw_func), params, count, out, returns, trap
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return int(out[0].of.i32) & 0xFFFFFFFF if returns else None

    return call


def _slow(func: wasmtime.Func) -> Callable[..., int | None]:
    def call(store: Any, *args: int) -> int | None:
        result = func(store, *args)
        return int(result) if isinstance(result, int) else None

    return call
