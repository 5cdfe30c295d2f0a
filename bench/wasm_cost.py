"""Guest cost of Python filters inside Envoy, counted in Wasm instructions (deterministic).

Throughput inside Envoy moves with machine load; the number of Wasm instructions the guest runs
per request does not. This script drives the bench's modules in envoykit's Wasm test host with
instruction counting on (``WasmHost(metered=True)``) and prints, per request:

- the floor: envoykit's C shim and CPython answering two header callbacks, no SDK
  (``bench/wasm_floor.py``, the ``wasm-floor`` scenario of ``bench/run.py``);
- envoykit's no-op chain (library filter ``noop``, the ``wasm-noop`` scenario);
- a chain that does work: ``add-headers`` setting one request and one response header.

Usage: ``.venv/bin/python bench/wasm_cost.py [--requests N]`` (from the repository root).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import _build_wasm
from envoykit.testing.wasmhost import WasmHost

CHAINS: list[tuple[str, bool, list[dict[str, object]]]] = [
    ("floor: bare Python callbacks, no SDK", True, []),
    ("envoykit no-op chain (`noop`)", False, [{"filter": "noop"}]),
    (
        "envoykit `add-headers` (one request + one response header)",
        False,
        [{"filter": "add-headers", "config": {"request": {"x-a": "1"}, "response": {"x-b": "2"}}}],
    ),
]
HEADERS = {"user-agent": "wrk", "accept": "*/*", "x-request-id": "5f1d0a4e-7d6b-4a57-9e61-1c3f0c9a8b21"}


def per_request(module: Path, specs: list[dict[str, object]], requests: int) -> float:
    """Median instructions per request after a warm-up (first requests fill caches)."""
    host = WasmHost.load(module, configuration=json.dumps({"filters": specs}), metered=True)
    for _ in range(20):
        host.request("GET", "/", headers=HEADERS)
    costs = []
    for _ in range(requests):
        before = host.instructions
        host.request("GET", "/", headers=HEADERS)
        costs.append(host.instructions - before)
    return statistics.median(costs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    modules = {False: _build_wasm()[0], True: _build_wasm(floor=True)[0]}
    floor = None
    print("\n| chain | Wasm instructions per request | vs floor |\n|---|---|---|")
    for title, is_floor, specs in CHAINS:
        module = modules[is_floor]
        if module is None:
            print(f"| {title} | not built | - |")
            continue
        cost = per_request(module, specs, args.requests)
        floor = cost if is_floor else floor
        ratio = f"{cost / floor:.1f}x" if floor else "-"
        print(f"| {title} | {cost:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
