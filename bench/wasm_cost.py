"""Guest cost of Python filters inside Envoy, counted in Wasm instructions (deterministic).

Throughput inside Envoy moves with machine load; the number of Wasm instructions the guest runs
per request does not. This script drives the bench's modules in envoykit's Wasm test host with
instruction counting on (``WasmHost(metered=True)``) and prints, per request:

- the floor: envoykit's C shim and CPython answering two header callbacks, no SDK
  (``bench/wasm_floor.py``, the ``wasm-floor`` scenario of ``bench/run.py``);
- envoykit's no-op chain (library filter ``noop``, the ``wasm-noop`` scenario);
- a chain that does work: ``add-headers`` setting one request and one response header;
- library filters: ``security-headers`` with its default preset, ``cors`` with one origin.

Usage: ``.venv/bin/python bench/wasm_cost.py [--requests N] [--results bench/RESULTS.md]`` (from
the repository root); ``--results`` puts the table into that file as its own section.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import write_section
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
    (
        "library `security-headers` (default preset: sets 7 response headers)",
        False,
        [{"filter": "security-headers"}],
    ),
    (
        "library `cors` (one allowed origin; a request without Origin)",
        False,
        [{"filter": "cors", "config": {"allow_origins": ["https://a.example"]}}],
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
    parser.add_argument("--results", type=Path, help="put the table into this RESULTS.md")
    args = parser.parse_args(argv)
    modules = {False: _build_wasm()[0], True: _build_wasm(floor=True)[0]}
    floor = None
    rows = ["| chain | Wasm instructions per request | vs floor |", "|---|---|---|"]
    print("\n" + "\n".join(rows))
    for title, is_floor, specs in CHAINS:
        module = modules[is_floor]
        if module is None:
            rows.append(f"| {title} | not built | - |")
        else:
            cost = per_request(module, specs, args.requests)
            floor = cost if is_floor else floor
            rows.append(f"| {title} | {cost:,.0f} | {f'{cost / floor:.1f}x' if floor else '-'} |")
        print(rows[-1], flush=True)
    if args.results is not None:
        command = shlex.join(["python", "bench/wasm_cost.py", *(argv if argv is not None else sys.argv[1:])])
        body = (
            f"Command: `{command}`. Median over {args.requests} requests after a warm-up, counted by "
            "wasmtime (unlike throughput, this does not depend on machine load).\n\n" + "\n".join(rows)
        )
        write_section(args.results, "Guest cost of in-proxy Python (Wasm instructions per request)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
