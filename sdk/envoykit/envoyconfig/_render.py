"""Compose an Envoy 1.40 bootstrap for a gateway file.

The processing mode Envoy uses is derived from the chains, never written by hand: the filter
gets the union of all chains' needs, and each route overrides it with its own chain's needs and
names the chain in the gRPC initial metadata, so the sidecar knows which chain to run and Envoy
never sends a phase that chain does not use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._chain import Chain
from .._phases import BodyMode, ProcessingNeeds
from ..gateway import AuthzBodySpec, Gateway, GatewayConfig, RouteSpec, UpstreamSpec
from ._fragments import fragment

__all__ = [
    "render_bootstrap",
    "sidecar_address",
    "wasm_filter",
    "ext_authz_filter",
    "header_patterns",
    "chain_specs",
    "ensure_in_proxy_module",
    "LISTENER_NAME",
    "SIDECAR_CLUSTER",
]

LISTENER_NAME = "ingress"
SIDECAR_CLUSTER = "envoykit_sidecar"
_EXT_PROC = "envoy.filters.http.ext_proc"
_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_WASM = "envoy.filters.http.wasm"
_FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
_AUTHZ_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
#: Where Envoy keeps the dynamic metadata an ext_authz check returned.
AUTHZ_METADATA_NAMESPACE = _EXT_AUTHZ


def render_bootstrap(
    gateway: Gateway,
    *,
    sidecar: str | None = None,
    listener_port: int | None = None,
    admin_port: int | None = None,
    upstreams: Mapping[str, str] | None = None,
    access_log: str | None = None,
    in_proxy: list[Any] | None = None,
    ratelimit: str | None = None,
    authz_http: str | None = None,
) -> dict[str, Any]:
    """The bootstrap as a dict (``yaml.safe_dump`` it for Envoy).

    Keyword overrides replace values from the file (tests and the demo pass port 0 and the
    addresses they actually bound): ``sidecar`` is ``host:port`` or ``unix:/path``,
    ``upstreams`` maps an upstream name to an ``http://host:port`` URL. ``in_proxy`` filters
    (e.g. ``wasm_filter(...)``) run first, before the sidecar's ext_proc filter. ``ratelimit``
    overrides the rate-limit service's ``host:port``, ``authz_http`` the HTTP ext_authz server's
    (``authz.protocol: http``).

    A filter instance with a true ``manages_server_header`` attribute (``security-headers``
    removing or setting ``server``) switches the listener to ``server_header_transformation:
    PASS_THROUGH``: otherwise Envoy writes ``server: envoy`` after every filter has run.
    """
    config = gateway.config
    used = _used_chains(config, gateway.chains)
    filters: list[Any] = list(in_proxy or [])
    if config.in_proxy is not None:
        spec = config.in_proxy
        chain = gateway.chains[spec.chain]
        filters.insert(0, wasm_filter(str(gateway.path(spec.module)), chain_specs(chain), name=spec.chain))
    clusters: list[Any] = [
        _upstream_cluster(name, spec.model_copy(update={"url": (upstreams or {}).get(name, spec.url)}))
        for name, spec in config.upstreams.items()
    ]
    authz_chain = gateway.chains[config.authz.chain] if config.authz is not None else None
    if config.authz is not None and authz_chain is not None:
        filters.append(ext_authz_filter(config, authz_chain))  # before ext_proc: deny first
    if used:
        union = ProcessingNeeds()
        for chain in used.values():
            union = union | chain.needs
        timeout = f"{config.sidecar.message_timeout_ms / 1000:g}s"
        namespaces = sorted({f.metadata_namespace for chain in used.values() for f in chain.filters})
        filters.append(
            fragment(
                "ext_proc_filter",
                timeout=timeout,
                failure_mode_allow=config.sidecar.failure_mode_allow,
                processing_mode=union.envoy_processing_mode(),
                request_attributes=list(config.sidecar.request_attributes),
                metadata_namespaces=namespaces,
            )
        )
        # A filter that rewrites :method (the gRPC-JSON transcoder) needs Envoy's routing headers
        # unlocked; they stay protected otherwise.
        if any(
            getattr(f, "modifies_routing_headers", False) for chain in used.values() for f in chain.filters
        ):
            filters[-1]["typed_config"]["mutation_rules"]["allow_all_routing"] = True
    authz_http_mode = config.authz is not None and config.authz.protocol == "http"
    if authz_http_mode:
        clusters.append(
            fragment(
                "authz_http_cluster",
                address=sidecar_address(authz_http or config.sidecar.authz_http_address),
            )
        )
    if used or (authz_chain is not None and not authz_http_mode):
        clusters.append(
            fragment("sidecar_cluster", address=sidecar_address(sidecar or config.sidecar.address))
        )
    if config.ratelimit is not None:
        spec_rl = config.ratelimit
        filters.append(
            fragment(
                "ratelimit_filter",
                domain=spec_rl.domain,
                failure_mode_deny=spec_rl.failure_mode_deny,
                timeout=f"{spec_rl.timeout_ms / 1000:g}s",
            )
        )
        clusters.append(fragment("ratelimit_cluster", address=sidecar_address(ratelimit or spec_rl.address)))
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    routes = [_route(i, r, config, gateway.chains, bool(used)) for i, r in enumerate(config.routes)]
    for route, out in zip(config.routes, routes, strict=True):
        if config.in_proxy is not None and not route.in_proxy:
            # Envoy's generic per-route switch: the Wasm filter is skipped on this route.
            out.setdefault("typed_per_filter_config", {})[_WASM] = {"@type": _FILTER_CONFIG, "disabled": True}
    if authz_chain is not None:
        for route, out in zip(config.routes, routes, strict=True):
            if not route.authz:
                out.setdefault("typed_per_filter_config", {})[_EXT_AUTHZ] = {
                    "@type": _AUTHZ_PER_ROUTE,
                    "disabled": True,
                }
    log_path = access_log if access_log is not None else config.access_log
    in_proxy_chain = gateway.chains[config.in_proxy.chain] if config.in_proxy is not None else None
    running = [
        *used.values(),
        *([in_proxy_chain] if in_proxy_chain is not None else []),
        *([authz_chain] if authz_chain is not None else []),
    ]
    listener = fragment(
        "listener",
        name=LISTENER_NAME,
        address=config.listener.address,
        port=config.listener.port if listener_port is None else listener_port,
        routes=routes,
        http_filters=filters,
        access_log=[_access_log(log_path, used, in_proxy_chain, authz_chain)] if log_path else [],
        server_header_transformation="PASS_THROUGH"
        if any(getattr(f, "manages_server_header", False) for chain in running for f in chain.filters)
        else "OVERWRITE",
    )
    return dict(
        fragment(
            "bootstrap",
            admin_address=config.admin.address,
            admin_port=config.admin.port if admin_port is None else admin_port,
            listeners=[listener],
            clusters=clusters,
        )
    )


def ext_authz_filter(config: GatewayConfig, chain: Chain) -> Any:
    """Envoy's ``ext_authz`` filter calling the sidecar for ``config.authz`` (gRPC, API v3).

    The request body is forwarded when the gateway asks for it or when a filter of the chain has
    a body hook (then with ``with_request_body``'s defaults)."""
    spec = config.authz
    if spec is None:
        raise ValueError("the gateway has no authz section")
    if spec.protocol == "http":
        out = _ext_authz_http_filter(config)
    else:
        out = fragment(
            "ext_authz_filter",
            timeout=f"{spec.timeout_ms / 1000:g}s",
            chain=spec.chain,
            failure_mode_allow=spec.failure_mode_allow,
            status_on_error=spec.status_on_error,
            include_peer_certificate=spec.include_peer_certificate,
            metadata_context_namespaces=list(spec.metadata_context_namespaces),
        )
    body = spec.with_request_body
    if body is None and chain.needs.request_body is not BodyMode.NONE:
        body = AuthzBodySpec()
    if body is not None:
        out["typed_config"]["with_request_body"] = body.model_dump()
    return out


#: Never sent to the HTTP authorization server: hop-by-hop and framing headers of the client's
#: request (Envoy frames the check request itself).
_NOT_FORWARDED = (
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "expect",
)
#: Never copied from an allow answer to the upstream request: its own framing and Envoy's
#: removal list.
_NOT_UPSTREAM = (
    ":status",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-envoy-auth-headers-to-remove",
)


def _ext_authz_http_filter(config: GatewayConfig) -> Any:
    spec = config.authz
    assert spec is not None
    allowed = (
        header_patterns(spec.allowed_headers)
        if spec.allowed_headers is not None
        else [_all_but(_NOT_FORWARDED)]
    )
    out = fragment(
        "ext_authz_http_filter",
        authority=_authority(config.sidecar.authz_http_address),
        timeout=f"{spec.timeout_ms / 1000:g}s",
        chain=spec.chain,
        allowed_headers=allowed,
        disallowed_headers=[{"exact": name} for name in _NOT_FORWARDED],
        allowed_upstream_headers=header_patterns(spec.allowed_upstream_headers, exclude=_NOT_UPSTREAM),
        failure_mode_allow=spec.failure_mode_allow,
        status_on_error=spec.status_on_error,
        include_peer_certificate=spec.include_peer_certificate,
        metadata_context_namespaces=list(spec.metadata_context_namespaces),
    )
    if spec.allowed_client_headers is not None:
        out["typed_config"]["http_service"]["authorization_response"]["allowed_client_headers"] = {
            "patterns": header_patterns(spec.allowed_client_headers)
        }
    return out


def _authority(address: str) -> str:
    return "envoykit-authz" if address.startswith("unix:") else address


def header_patterns(patterns: tuple[str, ...], *, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Envoy ``StringMatcher``s for gateway-file header patterns (``name``, ``prefix*``, ``*``);
    ``*`` matches any name but those of ``exclude``."""
    out: list[dict[str, Any]] = []
    for pattern in patterns:
        if pattern == "*":
            out += _all_but(exclude)
        elif pattern.endswith("*"):
            out.append({"prefix": pattern[:-1]})
        else:
            out.append({"exact": pattern})
    return out


def _all_but(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """RE2 matchers (no look-ahead) for every header name except ``names``: a complement built on
    the names' trie, split into regexes small enough for Envoy's RE2 program-size limit (100)."""
    trie: dict[str, Any] = {}
    for name in names:
        node = trie
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}

    def complement(node: dict[str, Any]) -> str:
        children = sorted(c for c in node if c)
        if not children:
            return ".+"  # an excluded name, continued
        options = [] if "" in node else [""]  # a strict prefix of an excluded name is fine
        options.append(f"[^{''.join(re.escape(c) for c in children)}].*")
        options += [f"{re.escape(c)}(?:{complement(node[c])})" for c in children]
        return "|".join(options)

    out: list[dict[str, Any]] = []

    def split(node: dict[str, Any], prefix: str) -> None:
        whole = complement(node)
        if len(whole) <= 130:
            out.append({"safe_regex": {"regex": f"^{prefix}(?:{whole})$"}})
            return
        children = sorted(c for c in node if c)
        here = [] if "" in node else [""]
        here.append(f"[^{''.join(re.escape(c) for c in children)}].*")
        out.append({"safe_regex": {"regex": f"^{prefix}(?:{'|'.join(here)})$"}})
        for c in children:
            split(node[c], prefix + re.escape(c))

    split(trie, "")
    return out


def wasm_filter(module: str, filters: list[dict[str, Any]], *, name: str = "envoykit") -> Any:
    """The ``envoy.filters.http.wasm`` filter running ``filters`` (gateway-file filter specs:
    ``{"filter": NAME, "config": {...}}``) from a module built by ``envoykit build-wasm``."""
    configuration = json.dumps({"chain": name, "filters": filters}, separators=(",", ":"), sort_keys=True)
    return fragment("wasm_filter", name=name, configuration=configuration, filename=module)


def chain_specs(chain: Chain) -> list[dict[str, Any]]:
    """A chain as the plugin-configuration filter list the in-proxy runtime builds it from."""
    return [
        {
            "filter": type(f).name,
            "name": f.name,
            "config": f.config.model_dump(mode="json"),
            "failure_mode": f.failure_mode.value,
            "metadata_namespace": f.metadata_namespace,
        }
        for f in chain.filters
    ]


def sidecar_address(address: str) -> dict[str, Any]:
    """An Envoy address for the sidecar: ``pipe`` for ``unix:/path``, else a socket address."""
    if address.startswith("unix:"):
        return {"pipe": {"path": address[5:]}}
    host, _, port = address.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def ensure_in_proxy_module(gateway: Gateway, *, force: bool = False) -> Path | None:
    """Build the gateway's in-proxy Wasm module from its ``source`` when that is set (cached,
    incremental); return the module path (None when nothing runs in-proxy)."""
    spec = gateway.config.in_proxy
    if spec is None:
        return None
    module = gateway.path(spec.module)
    if spec.source is not None:
        from ..wasm._filters import build_filter_wasm  # host-side build tooling, loaded only here

        build_filter_wasm(gateway.path(spec.source), module, force=force)
    return module


def _used_chains(config: GatewayConfig, chains: Mapping[str, Chain]) -> dict[str, Chain]:
    default = config.effective_default_chain
    names = {r.chain_name(default) for r in config.routes}
    return {n: chains[n] for n in sorted(n for n in names if n is not None) if chains[n].needs.any}


def _route(
    index: int, route: RouteSpec, config: GatewayConfig, chains: Mapping[str, Chain], has_ext_proc: bool
) -> dict[str, Any]:
    match = {"prefix": route.prefix} if route.prefix is not None else {"path": route.path}
    out: dict[str, Any] = {
        "name": route.name or f"route{index}",
        "match": match,
        "route": {"cluster": _cluster_name(route.upstream), "timeout": "30s"},
    }
    if route.rate_limits:
        out["route"]["rate_limits"] = route.rate_limits
    chain_name = route.chain_name(config.effective_default_chain)
    if chain_name is not None:
        out["metadata"] = {"filter_metadata": {"envoykit": {"chain": chain_name}}}
    if not has_ext_proc:
        return out
    chain = chains.get(chain_name) if chain_name else None
    if chain is None or not chain.needs.any:
        out["typed_per_filter_config"] = {_EXT_PROC: {"@type": _PER_ROUTE, "disabled": True}}
    else:
        out["typed_per_filter_config"] = fragment(
            "ext_proc_route", processing_mode=chain.needs.envoy_processing_mode(), chain=chain_name
        )
    return out


def _cluster_name(upstream: str) -> str:
    return f"upstream_{upstream}"


def _upstream_cluster(name: str, spec: UpstreamSpec) -> Any:
    return fragment(
        "upstream_cluster",
        name=_cluster_name(name),
        discovery="STATIC" if spec.is_ip else "STRICT_DNS",
        protocol={"http2_protocol_options": {}}
        if spec.http2
        else {"http_protocol_options": {"enable_trailers": True}},
        host=spec.host,
        port=spec.port,
    )


def _access_log(
    path: str, chains: Mapping[str, Chain], in_proxy: Chain | None = None, authz: Chain | None = None
) -> Any:
    fields: dict[str, str] = {
        "time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "route": "%ROUTE_NAME%",
    }
    for ns in sorted({f.metadata_namespace for chain in chains.values() for f in chain.filters}):
        fields[ns] = f"%DYNAMIC_METADATA({ns})%"
    # In-proxy filters' metadata is Wasm filter state: PLAIN prints the JSON text (the default
    # would print a base64 BytesValue). Under `wasm.<ns>` if a sidecar chain uses `<ns>` too.
    for ns in sorted({f.metadata_namespace for f in (in_proxy.filters if in_proxy else ())}):
        fields[f"wasm.{ns}" if ns in fields else ns] = f"%FILTER_STATE(wasm.{ns}:PLAIN)%"
    # An ext_authz check's metadata lives under Envoy's ext_authz namespace, one key per filter.
    for ns in sorted({f.metadata_namespace for f in (authz.filters if authz else ())}):
        fields[f"authz.{ns}" if ns in fields else ns] = f"%DYNAMIC_METADATA({_EXT_AUTHZ}:{ns})%"
    return fragment("json_access_log", path="/dev/stdout" if path == "-" else path, fields=fields)
