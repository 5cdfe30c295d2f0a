"""Which chain runs a request: one rule, shared by every sidecar protocol.

The route decides. envoykit's Envoy config names the chain per route in the gRPC initial
metadata of the ext_proc stream (``x-envoykit-chain``); route metadata
(``filter_metadata.envoykit.chain``) and an opt-in request header cover hand-written configs;
the default chain catches the rest. The header is last and off by default: a client could send
it too, so it is only safe when Envoy sets or strips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._chain import Chain, ChainObserver
from .._errors import ConfigError
from .._headers import Headers

__all__ = ["ChainRouter", "CHAIN_METADATA_KEY", "ROUTE_METADATA_ATTRIBUTE"]

#: gRPC initial-metadata key naming the chain (set per route by envoykit's Envoy config).
CHAIN_METADATA_KEY = "x-envoykit-chain"
#: The Envoy attribute that carries the route's metadata (when asked for in request_attributes).
ROUTE_METADATA_ATTRIBUTE = "xds.route_metadata"


class ChainRouter:
    """Chains by name plus the selection rule. Built once per server; lookups per request."""

    def __init__(
        self,
        chains: Mapping[str, Chain],
        *,
        default_chain: str | None = None,
        chain_header: str | None = None,
        observer: ChainObserver | None = None,
    ) -> None:
        if not chains:
            raise ConfigError("a sidecar needs at least one chain", field="chains")
        for key, chain in chains.items():
            if not isinstance(chain, Chain):
                raise ConfigError(
                    f"chain {key!r} is {type(chain).__name__}, not an envoykit.Chain", field="chains"
                )
        if default_chain is None and len(chains) == 1:
            default_chain = next(iter(chains))
        if default_chain is not None and default_chain not in chains:
            raise ConfigError(
                f"default chain {default_chain!r} is not one of {sorted(chains)}", field="default_chain"
            )
        self.chains: dict[str, Chain] = dict(chains)
        #: Runs when nothing else names a chain; ``None`` makes unnamed requests an error (500).
        self.default_chain = default_chain
        self.chain_header = chain_header.lower() if chain_header else None
        if observer is not None:
            # A chain object serves one server's metrics at a time (the last one wins).
            for chain in self.chains.values():
                chain.observer = observer

    def select(
        self,
        named: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        headers: Headers | None = None,
    ) -> tuple[str | None, Chain | None]:
        """``(name, chain)``; ``chain`` is ``None`` when the name is unknown (or nothing and no
        default): a misconfiguration the runtime answers with a 500."""
        name = named
        if name is None and attributes:
            name = route_chain(attributes.get(ROUTE_METADATA_ATTRIBUTE))
        if name is None and self.chain_header is not None and headers is not None:
            name = headers.get(self.chain_header)
        if name is None:
            name = self.default_chain
        if name is None:
            return None, None
        return name, self.chains.get(name)


def route_chain(route_metadata: Any) -> str | None:
    """``filter_metadata.envoykit.chain`` from a route's metadata (as a plain mapping)."""
    if not isinstance(route_metadata, Mapping):
        return None
    scope = route_metadata.get("filter_metadata", route_metadata)
    envoykit = scope.get("envoykit") if isinstance(scope, Mapping) else None
    chain = envoykit.get("chain") if isinstance(envoykit, Mapping) else None
    return chain if isinstance(chain, str) and chain else None
