"""The shim runs the header callbacks' common case in C (``InProxyRuntime.fast_path``).

The portability matrix shows the answers are the same as in the sidecar; this shows the C path is
the one taken: a fail-closed chain (C loop) costs the guest far fewer Wasm instructions per request
than the same chain fail-open, which the shim leaves to the Python callbacks (``Stream._run_sync``
keeps an undo point per hook). Instruction counts are deterministic, unlike timings.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from envoykit.testing.wasmhost import WasmHost

pytest.importorskip("ziglang")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _cost_and_answer(module: Path, failure_mode: str) -> tuple[float, tuple[int, list[tuple[str, str]]]]:
    config = {"filters": [{"filter": "explode", "failure_mode": failure_mode}]}
    host = WasmHost.load(module, configuration=json.dumps(config), metered=True)
    for _ in range(10):
        host.request("GET", "/fine")
    costs = []
    for _ in range(20):
        before = host.instructions
        result = host.request("GET", "/fine", headers={"x-a": "1"})
        costs.append(host.instructions - before)
    return statistics.median(costs), (result.status, sorted(result.upstream_request.headers))


def test_fail_closed_header_hooks_take_the_c_path(every_hook_wasm: Path) -> None:
    closed, closed_answer = _cost_and_answer(every_hook_wasm, "closed")
    opened, open_answer = _cost_and_answer(every_hook_wasm, "open")
    assert closed_answer == open_answer and closed_answer[0] == 200
    # Measured: ~30k (C) against ~68k (Python) per request, most of it the hook reading the path.
    assert closed * 2 < opened, (closed, opened)


def test_response_hooks_read_the_request_headers_no_request_hook_read(every_hook_wasm: Path) -> None:
    # The C path leaves a map in Envoy until a hook reads it, but copies the request's out before
    # its callback returns: later filters may change it, and the test host (like Envoy after the
    # request went upstream) no longer lends it.
    host = WasmHost.load(every_hook_wasm, configuration=json.dumps({"filters": [{"filter": "echo-path"}]}))
    for path in ("/first", "/second?q=1"):
        result = host.request("GET", path)
        assert result.status == 200
        assert result.response.headers.get("x-request-path") == path


@pytest.mark.parametrize("failure_mode", ["closed", "open"])
def test_system_exit_in_a_hook_fails_the_request_not_the_vm(every_hook_wasm: Path, failure_mode: str) -> None:
    # SystemExit is not an Exception, so it skips the filter's failure mode; the shim still answers
    # that request with a 500 and logs the traceback. It must not run CPython's exit handling,
    # which would end the VM and with it every later request on this worker.
    config = {"filters": [{"filter": "exit", "failure_mode": failure_mode}]}
    host = WasmHost.load(every_hook_wasm, configuration=json.dumps(config))
    failed = host.request("GET", "/exit")
    assert failed.status == 500 and failed.upstream_request is None
    assert any("SystemExit: bye" in line for line in host.log_messages()), host.log_messages()
    assert host.request("GET", "/fine").status == 200


def test_a_kept_request_keeps_its_own_headers(every_hook_wasm: Path) -> None:
    # A request-only chain: the C path drops the context at the end of the request headers, its
    # map unread. A filter that kept the message must still read that request's headers later,
    # not whichever map is Envoy's current one (the next request's).
    host = WasmHost.load(every_hook_wasm, configuration=json.dumps({"filters": [{"filter": "keep-first"}]}))
    assert host.request("GET", "/first").status == 200
    for path in ("/second", "/third"):
        result = host.request("GET", path)
        assert result.upstream_request is not None
        assert result.upstream_request.headers.get("x-first-path") == "/first"


def test_a_map_is_copied_before_a_system_exit_ends_its_callback(every_hook_wasm: Path) -> None:
    # SystemExit in on_response_headers ends the callback (the response goes on) with the response's
    # map unread; the context lives on, so the body hook must read the headers as they were then,
    # not Envoy's map after the callback (here gone: it went downstream).
    host = WasmHost.load(every_hook_wasm, configuration=json.dumps({"filters": [{"filter": "exit-late"}]}))
    for path in ("/fine", "/exit-late"):
        result = host.request("GET", path)
        assert result.status == 200
        assert result.response.body == b"text/plain", (path, host.log_messages())


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("failure_mode", ["closed", "open"])  # open: the Python callbacks, not the C path
def test_a_state_that_cannot_be_made_is_a_runtime_error(
    every_hook_wasm: Path, failure_mode: str, allow: bool
) -> None:
    # Without its state no hook of the filter can run: the runtime's error policy decides (500, or
    # the request goes on with failure_mode_allow), and the request's later callbacks pass.
    config = {"filters": [{"filter": "bad-state", "failure_mode": failure_mode}], "failure_mode_allow": allow}
    host = WasmHost.load(every_hook_wasm, configuration=json.dumps(config))
    result = host.request("GET", "/")
    assert result.status == (200 if allow else 500), host.log_messages()
    assert (result.upstream_request is not None) is allow
    assert "x-bad-state" not in result.response.headers
    if allow:
        assert "x-bad-state" not in result.upstream_request.headers
    assert any("RuntimeError: no state" in line for line in host.log_messages()), host.log_messages()
