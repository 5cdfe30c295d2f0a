"""The ext_proc protobuf modules, imported in one place.

``xds-protos`` ships generated modules without type information; importing them here keeps the
``Any``-typed surface to one module and gives the rest of the package short names.
Never create a package named ``envoy`` in this project: it would shadow ``xds-protos``.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc_pb2
from envoy.type.v3 import http_status_pb2

__all__ = [
    "ext_proc_pb2",
    "base_pb2",
    "processing_mode_pb2",
    "http_status_pb2",
    "SERVICE_NAME",
    "PROCESS_METHOD",
]

#: The gRPC service Envoy's ext_proc filter calls.
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
PROCESS_METHOD = "Process"
