"""Run envoykit chains behind Envoy's ``ext_proc`` filter, in a grpc.aio sidecar.

``ExtProcService`` is the servicer; the server around it (health, metrics, graceful stop) is
``envoykit.runtime``'s, re-exported here so a sidecar needs one import::

    from envoykit.extproc import SidecarThread
    with SidecarThread(chains={"default": chain}) as sidecar:
        ...  # point Envoy's ext_proc cluster at sidecar.address
"""

from ..runtime import (
    CHAIN_METADATA_KEY,
    DEFAULT_ADDRESS,
    SidecarMetrics,
    SidecarServer,
    SidecarThread,
    run_sidecar,
)
from ._attributes import ATTRIBUTES_KEY, build_attributes, raw_attributes, split_host_port
from ._convert import header_mutation, headers_in, immediate_response, processing_mode
from ._protos import SERVICE_NAME
from ._service import ExtProcService

__all__ = [
    "ATTRIBUTES_KEY",
    "CHAIN_METADATA_KEY",
    "DEFAULT_ADDRESS",
    "ExtProcService",
    "SERVICE_NAME",
    "SidecarMetrics",
    "SidecarServer",
    "SidecarThread",
    "build_attributes",
    "header_mutation",
    "headers_in",
    "immediate_response",
    "processing_mode",
    "raw_attributes",
    "run_sidecar",
    "split_host_port",
]
