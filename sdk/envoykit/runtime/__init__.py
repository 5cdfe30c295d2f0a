"""Pieces every envoykit sidecar shares, whatever the protocol (ext_proc now, ext_authz next).

Listen-address parsing, chain selection, Prometheus metrics (the chains' ``ChainObserver``),
the gRPC health service, the server lifecycle (``SidecarServer``, ``run_sidecar``) and a
background-thread runner (``SidecarThread``). Protocol servicers plug into ``SidecarServer`` as
``SidecarService`` objects; ext_proc is the default.
"""

from ._address import DEFAULT_ADDRESS, ListenAddress, parse_listen_address
from ._grpc import add_method_handlers
from ._health import HEALTH_SERVICE_NAME, HealthState
from ._metrics import HOOK_BUCKETS, MetricsEndpoint, SidecarMetrics
from ._router import CHAIN_METADATA_KEY, ROUTE_METADATA_ATTRIBUTE, ChainRouter
from ._server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_THREADS,
    ServerModel,
    ServiceFactory,
    SidecarServer,
    SidecarService,
    check_protobuf_backend,
    run_sidecar,
    tune_garbage_collector,
)
from ._structs import dict_to_struct, metadata_to_struct, struct_to_dict, value_to_python
from ._thread import SidecarThread

__all__ = [
    "add_method_handlers",
    "CHAIN_METADATA_KEY",
    "ChainRouter",
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_THREADS",
    "ServerModel",
    "HEALTH_SERVICE_NAME",
    "HOOK_BUCKETS",
    "HealthState",
    "ListenAddress",
    "MetricsEndpoint",
    "ROUTE_METADATA_ATTRIBUTE",
    "ServiceFactory",
    "SidecarMetrics",
    "SidecarServer",
    "SidecarService",
    "SidecarThread",
    "check_protobuf_backend",
    "dict_to_struct",
    "metadata_to_struct",
    "parse_listen_address",
    "run_sidecar",
    "tune_garbage_collector",
    "struct_to_dict",
    "value_to_python",
]
