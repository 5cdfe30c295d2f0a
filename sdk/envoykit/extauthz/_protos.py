"""The ext_authz protobuf modules, imported in one place (``xds-protos`` ships them untyped)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.type.v3 import http_status_pb2

__all__ = [
    "attribute_context_pb2",
    "base_pb2",
    "external_auth_pb2",
    "http_status_pb2",
    "SERVICE_NAME",
    "CHECK_METHOD",
]

#: The gRPC service Envoy's ext_authz filter calls.
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
CHECK_METHOD = "Check"
