"""Map ``grpc_health_check.v1.<mod>`` onto ``grpc_health.v1.<mod>`` (grpcio-health-checking).

Registering the real modules under the alias names (rather than re-exporting with ``*``) keeps
one module object per proto file, so protobuf never sees the same descriptor loaded twice.
"""

import importlib
import sys

for _name in ("health_pb2", "health_pb2_grpc", "health"):
    try:
        _module = importlib.import_module(f"grpc_health.v1.{_name}")
    except ImportError:  # pragma: no cover - only `health` is optional across versions
        continue
    sys.modules[f"{__name__}.{_name}"] = _module
    setattr(sys.modules[__name__], _name, _module)
