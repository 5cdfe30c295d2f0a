"""Alias package: the peer SDK imports ``grpc_health_check.v1``, which no PyPI package provides.

``grpcio-health-checking`` ships the same generated modules as ``grpc_health.v1``; see ``v1``.
"""
