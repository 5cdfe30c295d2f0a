"""``envoykit`` commands. Each one loads the gateway file first, so a bad file always fails the
same way: exit status 2 and ``file:line: field: reason`` on stderr, before anything starts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from .._errors import ConfigError, EnvoykitError
from ..gateway import Gateway, load_gateway

__all__ = ["app", "main"]

app = typer.Typer(
    name="envoykit",
    help="Python filters for a stock Envoy: run the sidecar, render Envoy config, try the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigArg = Annotated[Path, typer.Argument(help="Gateway file (YAML): listener, upstreams, chains, routes.")]


def _load(path: Path) -> Gateway:
    try:
        return load_gateway(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _ensure_wasm(gateway: Gateway) -> None:
    """Build the in-proxy Wasm module from its source, if the gateway has one (incremental)."""
    from ..envoyconfig import ensure_in_proxy_module

    try:
        ensure_in_proxy_module(gateway)
    except EnvoykitError as exc:
        typer.echo(f"error: {gateway.source}: in_proxy: {exc}", err=True)
        raise typer.Exit(2) from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def check(
    config: ConfigArg,
    envoy: Annotated[
        bool, typer.Option("--envoy/--no-envoy", help="Also run `envoy --mode validate`.")
    ] = True,
) -> None:
    """Validate a gateway file (and the Envoy config it renders)."""
    gateway = _load(config)
    _ensure_wasm(gateway)
    if envoy:
        from ..envoyconfig import render_bootstrap
        from ..testing import validate_bootstrap

        try:
            validate_bootstrap(render_bootstrap(gateway))
        except EnvoykitError as exc:
            typer.echo(f"error: {config}: Envoy rejects the rendered config: {exc}", err=True)
            raise typer.Exit(2) from None
    names = ", ".join(f"{n} ({len(c.filters)} filters)" for n, c in gateway.chains.items()) or "none"
    typer.echo(f"{config}: OK; chains: {names}")


@app.command("envoy-config")
def envoy_config(
    config: ConfigArg,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    sidecar: Annotated[
        str | None, typer.Option(help="Override sidecar address (host:port or unix:/path).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Override the listener port.")] = None,
) -> None:
    """Print the Envoy 1.40 bootstrap for a gateway file."""
    from ..envoyconfig import render_bootstrap

    gateway = _load(config)
    _ensure_wasm(gateway)
    text = yaml.safe_dump(render_bootstrap(gateway, sidecar=sidecar, listener_port=port), sort_keys=False)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


@app.command()
def serve(
    config: ConfigArg,
    address: Annotated[
        str | None, typer.Option(help="Override sidecar.address (host:port or unix:/path).")
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="Override sidecar.metrics_address ('' = off).")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "info",
) -> None:
    """Run the sidecar (ext_proc, and ext_authz for an ``authz`` chain) for a gateway file
    (Ctrl-C drains and stops)."""
    gateway = _load(config)
    _setup_logging(log_level)
    from ..extauthz import gateway_services
    from ..runtime import run_sidecar
    from ..runtime._h2 import H2BuildError

    services, model = gateway_services(gateway)
    spec = gateway.config.sidecar
    try:
        run_sidecar(
            chains=gateway.chains,
            default_chain=gateway.config.effective_default_chain,
            address=address or spec.address,
            chain_header=spec.chain_header,
            metrics_address=spec.metrics_address if metrics is None else metrics,
            drain_seconds=spec.drain_seconds,
            server_model=model,
            threads=spec.threads,
            services=services,
        )
    except (ConfigError, H2BuildError) as exc:  # sidecar.server h2: async hooks, no toolchain
        typer.echo(f"error: {config}: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("build-wasm")
def build_wasm(
    filter_module: Annotated[Path, typer.Argument(help="Python file defining HttpFilter classes.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the .wasm module.")] = Path(
        "filter.wasm"
    ),
    force: Annotated[bool, typer.Option(help="Rebuild even if nothing changed.")] = False,
) -> None:
    """Build a filter module (with envoykit's SDK and CPython) into a proxy-wasm module for Envoy."""
    import time

    from ..wasm import WasmBuildError
    from ..wasm._filters import build_filter_wasm

    started = time.monotonic()
    try:
        result = build_filter_wasm(
            filter_module, output, force=force, progress=lambda s: typer.echo(s, err=True)
        )
    except WasmBuildError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    size = output.stat().st_size / 1e6
    verb = "built" if result.rebuilt else "up to date (inputs unchanged)"
    elapsed = time.monotonic() - started
    frozen = len(result.frozen_modules)
    typer.echo(f"{output}: {verb}, {size:.1f} MB, {frozen} frozen modules, {elapsed:.1f}s")


@app.command()
def demo(
    port: Annotated[
        int, typer.Option(envvar="ENVOYKIT_DEMO_PORT", help="Listener port (env ENVOYKIT_DEMO_PORT).")
    ] = 10000,
    config: Annotated[
        Path | None, typer.Option(help="Run this gateway file instead of the built-in demo.")
    ] = None,
    smoke: Annotated[
        bool, typer.Option(help="Send the example requests, print the answers, and exit.")
    ] = False,
    wasm: Annotated[
        bool, typer.Option(help="Built-in demo with a Python chain compiled into Envoy (Wasm).")
    ] = False,
) -> None:
    """Bring up Envoy + the sidecar + a sample upstream, print example curl commands."""
    from ._demo import run_demo

    builtin = Path(__file__).resolve().parents[1] / "demo" / ("gateway-wasm.yaml" if wasm else "gateway.yaml")
    gateway = _load(config or builtin)
    _setup_logging(os.environ.get("ENVOYKIT_LOG_LEVEL", "warning"))
    raise typer.Exit(run_demo(gateway, port=port, smoke=smoke))


def main() -> None:
    app()


ratelimit_app = typer.Typer(help="The global rate-limit service (envoyproxy/ratelimit compatible).")
app.add_typer(ratelimit_app, name="ratelimit")


@ratelimit_app.command("serve")
def ratelimit_serve(
    config_dir: Annotated[
        Path,
        typer.Option("--config-dir", help="Directory of envoyproxy/ratelimit YAML files (hot-reloaded)."),
    ],
    port: Annotated[int, typer.Option(help="gRPC port.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",
    redis_url: Annotated[
        str | None, typer.Option(help="redis://host:port/db; in-memory counters when unset.")
    ] = None,
    redis_timeout_ms: Annotated[int, typer.Option(help="Deadline of one Redis round trip.")] = 50,
    failure_mode: Annotated[
        str, typer.Option(help="When Redis fails: 'open' allows, 'closed' refuses.")
    ] = "open",
    algorithm: Annotated[
        str, typer.Option(help="'fixed' (envoyproxy/ratelimit) or 'sliding' window.")
    ] = "fixed",
    shadow_mode: Annotated[bool, typer.Option(help="Global shadow mode: count, never refuse.")] = False,
    metrics: Annotated[str, typer.Option(help="host:port for Prometheus /metrics ('' = off).")] = "",
    reload_interval: Annotated[float, typer.Option(help="Seconds between config directory checks.")] = 1.0,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "info",
    threads: Annotated[int, typer.Option(help="gRPC worker threads (calls in flight).")] = 8,
    server_kind: Annotated[
        str,
        typer.Option(
            "--server",
            help="'h2' (native HTTP/2, batches calls), 'grpcio' (thread pool; --threads), or 'auto' "
            "(h2 if it can be built here, else grpcio).",
        ),
    ] = "auto",
) -> None:
    """Serve envoy.service.ratelimit.v3.RateLimitService for Envoy's native ratelimit filter."""
    from ..ratelimit import RateLimitServer, run_ratelimit
    from ..runtime._h2 import H2BuildError

    _setup_logging(log_level)
    if failure_mode not in ("open", "closed") or algorithm not in ("fixed", "sliding"):
        typer.echo("error: --failure-mode is open|closed, --algorithm is fixed|sliding", err=True)
        raise typer.Exit(2)
    try:
        server = RateLimitServer(
            config_dir,
            address=f"{host}:{port}",
            redis_url=redis_url,
            redis_timeout=redis_timeout_ms / 1000,
            failure_mode=failure_mode,  # type: ignore[arg-type]
            algorithm=algorithm,  # type: ignore[arg-type]
            shadow_mode=shadow_mode,
            metrics_address=metrics,
            reload_interval=reload_interval,
            threads=threads,
            server=server_kind,  # type: ignore[arg-type]
        )
    except (ConfigError, H2BuildError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    run_ratelimit(server)
