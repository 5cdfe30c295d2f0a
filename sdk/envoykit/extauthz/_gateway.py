"""Which gRPC services a gateway's sidecar serves, and on which server model.

One sidecar process serves both protocols: ext_proc for the chains routes name, ext_authz for
the gateway's ``authz`` chain (gRPC on the sidecar's port, or, with ``authz.protocol: http``, an
HTTP server on ``sidecar.authz_http_address`` in the same process). The server model is the
gateway's ``sidecar.server`` when set; otherwise ``threads`` for an ext_authz-only sidecar
(measured faster for unary checks, and a check never holds its thread while the upstream
answers) and ``aio`` when ext_proc streams are served too (see docs/extauthz.md).
"""

from __future__ import annotations

from ..gateway import Gateway
from ..runtime import ServerModel, ServiceFactory
from ._decisions import DecisionLog
from ._http import http_authz_service
from ._service import ext_authz_service

__all__ = ["gateway_services", "uses_ext_proc"]


def uses_ext_proc(gateway: Gateway) -> bool:
    """Whether any route sends requests to an ext_proc chain that does something."""
    config = gateway.config
    default = config.effective_default_chain
    names = {r.chain_name(default) for r in config.routes} - {None}
    return any(gateway.chains[n].needs.any for n in names if n is not None and n in gateway.chains)


def gateway_services(
    gateway: Gateway, decision_log: DecisionLog | None = None, *, authz_http_address: str | None = None
) -> tuple[list[ServiceFactory], ServerModel]:
    """``(service factories, server model)`` for ``SidecarServer``/``run_sidecar``
    (``authz_http_address`` overrides ``sidecar.authz_http_address``)."""
    from ..extproc import ExtProcService

    config = gateway.config
    ext_proc = uses_ext_proc(gateway) or config.authz is None
    services: list[ServiceFactory] = [ExtProcService] if ext_proc else []
    if config.authz is not None:
        if decision_log is None and config.authz.decision_log:
            decision_log = DecisionLog(
                str(gateway.path(config.authz.decision_log)) if config.authz.decision_log != "-" else "-",
                include_headers=config.authz.decision_log_headers,
            )
        if config.authz.protocol == "http":
            services.append(
                http_authz_service(
                    authz_http_address or config.sidecar.authz_http_address, decision_log=decision_log
                )
            )
        else:
            services.append(ext_authz_service(decision_log))
    model: ServerModel = config.sidecar.server
    if "server" not in config.sidecar.model_fields_set and config.authz is not None and not ext_proc:
        # gRPC checks: measured faster on threads. HTTP checks run on the event loop, and the
        # gRPC server is then only health: an idle thread pool.
        model = "threads"
    return services, model
