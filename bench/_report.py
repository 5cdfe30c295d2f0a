"""Turn scenario outcomes into the console table and bench/RESULTS.md.

RESULTS.md carries everything needed to reproduce or distrust a number: the exact command, the
date, Envoy's version, the CPUs and how processes were pinned. Ratios matter more than absolute
numbers on a shared 2-core machine, so they get their own section.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._measure import Outcome, RunSettings

__all__ = ["Environment", "collect_environment", "console_table", "results_markdown", "ratios"]

#: envoykit's no-op chain must reach at least this multiple of the peer's throughput.
TARGET_VS_PEER = 2.0
#: The chain as Wasm inside Envoy: at least this share of the no-filter throughput ...
TARGET_WASM_VS_NO_FILTER = 0.75
#: ... and at least this multiple of the same chain as an ext_proc sidecar.
TARGET_WASM_VS_EXT_PROC = 5.0

#: envoykit's no-op ext_authz chain: at least this share of Envoy's ext_authz ceiling (HTTP to a
#: static server answering 200 itself).
TARGET_AUTHZ_VS_CEILING = 0.9
#: JWT RS256 through envoykit's ext_authz: at least this share of Envoy's native jwt_authn.
TARGET_JWT_VS_NATIVE = 0.45

#: Hand-written reading of the numbers, kept outside the generated file and included verbatim.
NOTES_FILE = Path(__file__).resolve().parent / "NOTES.md"


@dataclass(frozen=True)
class Environment:
    date: str
    command: str
    envoy_version: str
    cpus: str
    cpu_model: str
    kernel: str
    python: str
    wrk: str
    load_before: str


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def collect_environment(command: str, envoy_version: str) -> Environment:
    allowed = len(os.sched_getaffinity(0))
    return Environment(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=command,
        envoy_version=envoy_version,
        cpus=f"{os.cpu_count()} online, {allowed} allowed to this process",
        cpu_model=_cpu_model(),
        kernel=platform.release(),
        python=platform.python_version(),
        wrk=_wrk_version(),
        load_before=load_average(),
    )


def load_average() -> str:
    """1/5/15-minute load averages: a busy neighbour on the shared machine shows up here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _by_key(outcomes: Sequence[Outcome]) -> dict[str, Outcome]:
    return {o.scenario.key: o for o in outcomes}


def _rps(outcome: Outcome | None) -> float | None:
    if outcome is None or outcome.result is None or not outcome.result.clean:
        return None
    return outcome.result.requests_per_s


def ratios(outcomes: Sequence[Outcome]) -> list[tuple[str, float | None, str]]:
    """(label, ratio or None, comment) for the comparisons the issue asks for."""
    by = _by_key(outcomes)
    pairs = [
        ("envoykit (TCP) / peer (TCP), req/s", "envoykit-tcp", "peer-tcp", TARGET_VS_PEER),
        (
            "envoykit `server: threads` (TCP) / peer (TCP), req/s",
            "envoykit-threads-tcp",
            "peer-tcp",
            TARGET_VS_PEER,
        ),
        ("envoykit (unix socket) / envoykit (TCP), req/s", "envoykit-uds", "envoykit-tcp", None),
        ("envoykit (TCP) / no filter, req/s", "envoykit-tcp", "no-filter", None),
        ("peer (TCP) / no filter, req/s", "peer-tcp", "no-filter", None),
        ("envoykit (TCP) / bare grpc.aio floor (TCP), req/s", "envoykit-tcp", "floor-tcp", None),
        ("bare grpc.aio floor / peer (TCP), req/s", "floor-tcp", "peer-tcp", None),
        ("bare sync-grpc floor / peer (TCP), req/s", "floor-sync-tcp", "peer-tcp", None),
        ("envoykit Wasm in Envoy / no filter, req/s", "wasm-noop", "no-filter", TARGET_WASM_VS_NO_FILTER),
        ("bare Python callbacks in Envoy (floor) / no filter, req/s", "wasm-floor", "no-filter", None),
        ("envoykit Wasm in Envoy / bare Python callbacks (floor), req/s", "wasm-noop", "wasm-floor", None),
        (
            "envoykit Wasm in Envoy / envoykit ext_proc `aio` (TCP), req/s",
            "wasm-noop",
            "envoykit-tcp",
            TARGET_WASM_VS_EXT_PROC,
        ),
        (
            "envoykit Wasm in Envoy / envoykit ext_proc `server: threads` (TCP), req/s",
            "wasm-noop",
            "envoykit-threads-tcp",
            TARGET_WASM_VS_EXT_PROC,
        ),
        (
            "envoykit ext_authz no-op (gRPC) / Envoy ext_authz ceiling (HTTP, static server), req/s",
            "authz-noop",
            "authz-http-ceiling",
            TARGET_AUTHZ_VS_CEILING,
        ),
        (
            "envoykit HTTP ext_authz no-op / ceiling (both `http_service`), req/s",
            "authz-http-noop",
            "authz-http-ceiling",
            TARGET_AUTHZ_VS_CEILING,
        ),
        (
            "envoykit HTTP ext_authz no-op / envoykit gRPC ext_authz no-op, req/s",
            "authz-http-noop",
            "authz-noop",
            None,
        ),
        (
            "bare grpc ext_authz floor (no SDK) / Envoy ext_authz ceiling (HTTP), req/s",
            "authz-floor",
            "authz-http-ceiling",
            None,
        ),
        ("envoykit ext_authz no-op / bare grpc ext_authz floor, req/s", "authz-noop", "authz-floor", None),
        ("envoykit ext_authz no-op / no filter, req/s", "authz-noop", "no-filter", None),
        ("Envoy ext_authz ceiling / no filter, req/s", "authz-http-ceiling", "no-filter", None),
        (
            "JWT RS256: envoykit `jwt` (ext_authz) / native `jwt_authn`, req/s",
            "jwt-envoykit",
            "jwt-native",
            TARGET_JWT_VS_NATIVE,
        ),
        (
            "JWT RS256: envoykit `jwt` (HTTP ext_authz) / native `jwt_authn`, req/s",
            "jwt-envoykit-http",
            "jwt-native",
            TARGET_JWT_VS_NATIVE,
        ),
        ("JWT RS256: envoykit `jwt` (ext_authz) / no filter, req/s", "jwt-envoykit", "no-filter", None),
        ("JWT RS256: native `jwt_authn` / no filter, req/s", "jwt-native", "no-filter", None),
        (
            "JWT RS256: envoykit `jwt` / envoykit no-op, both ext_authz, req/s",
            "jwt-envoykit",
            "authz-noop",
            None,
        ),
    ]
    rows: list[tuple[str, float | None, str]] = []
    for label, num_key, den_key, target in pairs:
        num, den = _rps(by.get(num_key)), _rps(by.get(den_key))
        if num is None or den is None or den == 0:
            missing = [k for k, v in ((num_key, num), (den_key, den)) if v is None]
            rows.append((label, None, f"not measured: {', '.join(missing)} has no clean result"))
            continue
        ratio = num / den
        comment = ""
        if target is not None:
            comment = f"target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"
        rows.append((label, ratio, comment))
    peer, ours = by.get("peer-tcp"), by.get("envoykit-tcp")
    peer_cpu = peer.median.sidecar_us_per_req if peer and peer.median else None
    our_cpu = ours.median.sidecar_us_per_req if ours and ours.median else None
    label = "peer sidecar CPU per request / envoykit sidecar CPU per request (TCP)"
    if peer_cpu and our_cpu:
        rows.append((label, peer_cpu / our_cpu, "less sensitive to a busy machine than req/s"))
    else:
        rows.append((label, None, "not measured"))
    return rows


def _startup_rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    """Per scenario: Envoy under test's start-up seconds and RSS (MiB), median over samples."""
    rows = []
    for o in outcomes:
        starts = [s.envoy_startup_s for s in o.samples if s.envoy_startup_s is not None]
        rss = [s.envoy_rss_kib / 1024 for s in o.samples if s.envoy_rss_kib is not None]
        if not starts and not rss:
            continue
        rows.append(
            [
                o.scenario.title,
                _fmt(statistics.median(starts) if starts else None, ".2f"),
                f"{min(starts):.2f}-{max(starts):.2f}" if starts else "-",
                _fmt(statistics.median(rss) if rss else None, ".1f"),
                f"{min(rss):.1f}-{max(rss):.1f}" if rss else "-",
                str(len(o.samples)),
            ]
        )
    return rows


STARTUP_HEADERS = [
    "scenario",
    "Envoy start-up s (median)",
    "start-up range",
    "Envoy RSS MiB (median)",
    "RSS range",
    "samples",
]


def wasm_cost_lines(outcomes: Sequence[Outcome], settings: RunSettings) -> list[str]:
    """The module's size and what the in-proxy chain adds to Envoy's CPU per request."""
    lines = []
    module = settings.wasm_module
    if module is not None and module.exists():
        size = module.stat().st_size
        lines.append(f"- Wasm module: {size:,} bytes ({size / 2**20:.1f} MiB), `{module.name}`")
    elif settings.wasm_error:
        lines.append(f"- Wasm module: not built ({settings.wasm_error.splitlines()[0][:200]})")
    by = _by_key(outcomes)
    base, wasm = by.get("no-filter"), by.get("wasm-noop")
    if base and wasm and base.median and wasm.median:
        extra = wasm.median.envoy_us_per_req - base.median.envoy_us_per_req
        lines.append(
            f"- Envoy CPU per request, Wasm minus no filter: {extra:.0f} µs "
            f"({wasm.median.envoy_us_per_req:.0f} vs {base.median.envoy_us_per_req:.0f}): the cost of"
            " the Python no-op chain (two header hooks) run by V8 in Envoy's worker"
        )
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rows(outcomes: Sequence[Outcome]) -> list[list[str]]:
    base = _rps(_by_key(outcomes).get("no-filter"))
    rows = []
    for o in outcomes:
        median = o.median
        if median is None:
            status = (o.error or "no result").splitlines()[0]
            rows.append([o.scenario.title, "-", "-", "-", "-", "-", "-", "-", status[:160]])
            continue
        r = median.wrk
        rows.append(
            [
                o.scenario.title,
                f"{r.requests_per_s:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                _fmt(r.requests_per_s / base if base else None, ".2f"),
                _fmt(median.envoy_us_per_req, ".0f"),
                _fmt(median.sidecar_us_per_req, ".0f"),
                f"{median.others_cores:.2f}",
                "; ".join(o.notes) or "ok",
            ]
        )
    return rows


HEADERS = [
    "scenario",
    "req/s",
    "p50 ms",
    "p99 ms",
    "vs no filter",
    "Envoy CPU µs/req",
    "sidecar CPU µs/req",
    "others' cores",
    "notes",
]


def console_table(outcomes: Sequence[Outcome]) -> str:
    rows = [HEADERS, *_rows(outcomes)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]))
    lines.append("")
    for label, ratio, comment in ratios(outcomes):
        lines.append(f"{label}: {_fmt(ratio, '.2f')}  {comment}".rstrip())
    return "\n".join(lines)


def results_markdown(
    outcomes: Sequence[Outcome], settings: RunSettings, env: Environment, peer_details: Sequence[str]
) -> str:
    out = [
        "# envoykit benchmark results",
        "",
        "Written by `bench/run.py`; rerun the command below to refresh. Numbers drift on a shared",
        "machine: compare the ratios, which held across runs, more than the absolute values.",
        "",
        "```",
        env.command,
        "```",
        "",
        f"- date: {env.date}",
        f"- Envoy: {env.envoy_version} (`--concurrency 1`, upstream = a second Envoy with `direct_response`)",
        f"- CPUs: {env.cpus}; {env.cpu_model}; Linux {env.kernel}; Python {env.python}",
        f"- load average (1/5/15 min) before: {env.load_before}; after: {load_average()}",
        f"- pinning: {settings.pinning.describe()}",
        f"- load: {env.wrk}; `wrk --latency -t1 -c{settings.connections} -d{settings.duration_s:g}s`, "
        f"{settings.warmup_s:g}s warm-up, {settings.repeat} round(s)"
        " (every scenario once per round, fresh processes; a sample disturbed by other processes is"
        " retried; median by req/s of the undisturbed samples), loopback",
        "- ext_proc: request + response headers SEND, bodies NONE, trailers SKIP,"
        " `failure_mode_allow: false`, `message_timeout: 1s`, sidecar cluster over HTTP/2",
        "- no-op logic: a request-headers hook and a response-headers hook that both return continue",
        "- ext_authz (`authz-*`, `jwt-envoykit`): `envoy.filters.http.ext_authz` gRPC (V3,"
        " `encode_raw_headers`, 1 s timeout, `failure_mode_allow: false`) to envoykit's ext_authz"
        " sidecar on `server: threads` (8 threads); the ceiling: the same filter in HTTP mode calling a"
        " third Envoy (pinned like a sidecar) that answers 200 with `direct_response`;"
        " `authz-http-noop`: that same HTTP-mode filter calling envoykit's HTTP authorization server"
        " (`authz.protocol: http`: httptools on uvloop, the no-op chain)",
        "- JWT (`jwt-*`): one RS256 key (2048 bits) in a JWKS file, the same `jwt_authn` provider block"
        " (issuer, audiences, `local_jwks`, `forward`, `payload_in_metadata`) for native `jwt_authn` and"
        " envoykit's `jwt`; wrk sends one valid token (`-H 'authorization: Bearer ...'`) on every request",
        "- Wasm: the same chain in-proxy: `envoy.filters.http.wasm` (V8) running envoykit's library filter"
        " `noop` from a module built by `envoykit.wasm._filters.build_filter_wasm(bench/wasm_filters.py)`,"
        " first in the HCM filters, `fail_open: false`, no sidecar",
        "",
        "## Results",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    for row in _rows(outcomes):
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    out += ["", "## Ratios", ""]
    for label, ratio, comment in ratios(outcomes):
        out.append(f"- {label}: **{_fmt(ratio, '.2f')}**" + (f" ({comment})" if comment else ""))
    startup = _startup_rows(outcomes)
    if startup:
        out += [
            "",
            "## Envoy start-up and memory",
            "",
            "Envoy under test only: start-up = process spawned to admin `/ready` answering `LIVE`;"
            " RSS = `VmRSS` right after the measured window.",
            "",
            "| " + " | ".join(STARTUP_HEADERS) + " |",
            "|" + "|".join("---" for _ in STARTUP_HEADERS) + "|",
            *("| " + " | ".join(row) + " |" for row in startup),
        ]
    wasm_lines = wasm_cost_lines(outcomes, settings)
    if wasm_lines:
        out += ["", *wasm_lines]
    failed = [o for o in outcomes if o.error]
    if failed:
        out += ["", "## Scenarios without a result", ""]
        for o in failed:
            out += [f"### {o.scenario.title}", "", "```", (o.error or "").strip(), "```", ""]
    notes = NOTES_FILE.read_text().strip() if NOTES_FILE.exists() else ""
    if notes:
        out += ["", notes]
    if peer_details:
        out += ["", "## The peer (`envoy-extproc-sdk`)", "", *peer_details]
    out += [
        "",
        "## Columns",
        "",
        "- req/s, p50, p99: wrk's own numbers for the measured window (not the warm-up).",
        "- Envoy / sidecar CPU µs/req: user+system CPU of that process over the window, from /proc,",
        "  divided by the requests wrk completed.",
        "- others' cores: CPU used during the window by processes that are not the bench's (a busy",
        "  neighbour on the shared machine); each window first waits (bounded) for the machine to be quiet.",
        "- notes: errors (a run with non-2xx or socket errors is not used for ratios) and a check",
        "  that Envoy opened one ext_proc stream per request.",
    ]
    return "\n".join(out).rstrip() + "\n"


def write_section(path: Path, title: str, body: str) -> None:
    """Put ``## title`` with ``body`` at the end of ``path`` (RESULTS.md), replacing an older copy
    of that section: scripts that run after ``bench/run.py`` add their tables this way."""
    heading = f"\n## {title}\n"
    text = path.read_text() if path.exists() else ""
    start = text.find(heading)
    if start != -1:
        following = text.find("\n## ", start + len(heading))
        text = text[:start] + (text[following:] if following != -1 else "")
    path.write_text(text.rstrip("\n") + "\n" + heading + "\n" + body.strip("\n") + "\n")
