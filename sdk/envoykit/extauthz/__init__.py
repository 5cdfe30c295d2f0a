"""Run envoykit chains behind Envoy's ``ext_authz`` filter (``envoy.service.auth.v3.Authorization``).

A chain's request phases decide: a filter's ``Reply`` denies (status, body, headers), otherwise
the request is allowed with the header changes, response headers and dynamic metadata the
filters made. The server around it (health, metrics, drain) is ``envoykit.runtime``'s::

    from envoykit.extauthz import ext_authz_service
    from envoykit.runtime import SidecarThread
    with SidecarThread({"authz": chain}, services=[ext_authz_service()], server_model="threads") as sc:
        ...  # point Envoy's ext_authz grpc_service at sc.address
"""

from ._convert import CHAIN_CONTEXT_KEY, check_attributes, check_body, check_headers
from ._decisions import REDACTED, DecisionLog, redact_path, redact_value
from ._gateway import gateway_services, uses_ext_proc
from ._http import CHAIN_HEADER, CLIENT_ADDRESS_HEADER, HttpAuthzService, http_authz_service
from ._metrics import AuthzMetrics
from ._protos import SERVICE_NAME
from ._service import ExtAuthzService, ext_authz_service

__all__ = [
    "AuthzMetrics",
    "CHAIN_CONTEXT_KEY",
    "DecisionLog",
    "ExtAuthzService",
    "HttpAuthzService",
    "http_authz_service",
    "CHAIN_HEADER",
    "CLIENT_ADDRESS_HEADER",
    "REDACTED",
    "SERVICE_NAME",
    "check_attributes",
    "check_body",
    "check_headers",
    "ext_authz_service",
    "gateway_services",
    "uses_ext_proc",
    "redact_path",
    "redact_value",
]
