"""envoykit: write Envoy filters in Python, run them in a sidecar, in Envoy (Wasm) or in a sandbox.

This package is the SDK core: pure Python, no I/O, no gRPC. Runtimes live in subpackages
(``envoykit.extproc``) and import the core, never the other way round.
"""

from ._attributes import Attributes, TlsInfo
from ._chain import DEFAULT_ERROR_REPLY, Chain, ChainObserver, Stream, drive_async, drive_sync, header_changes
from ._config import EmptyConfig, FilterConfig, validate_config
from ._errors import (
    ConfigError,
    EnvoykitError,
    FilterDefinitionError,
    HeaderError,
    MetadataError,
    PlacementError,
)
from ._filter import FailureMode, HookResult, HttpFilter, NoState
from ._headers import PSEUDO_HEADERS, Headers
from ._messages import Request, Response
from ._metadata import Metadata, MetadataStore
from ._metrics import Counter, FilterMetrics, Gauge, Histogram, InMemoryMetrics, MetricKind, MetricsBackend
from ._phases import BodyMode, Phase, ProcessingNeeds
from ._reply import Reply
from ._shared import LocalSharedData, SharedData

__version__ = "0.1.0"

__all__ = [
    "Attributes",
    "BodyMode",
    "Chain",
    "ChainObserver",
    "ConfigError",
    "Counter",
    "DEFAULT_ERROR_REPLY",
    "EmptyConfig",
    "EnvoykitError",
    "FailureMode",
    "FilterConfig",
    "FilterDefinitionError",
    "FilterMetrics",
    "Gauge",
    "HeaderError",
    "Histogram",
    "Headers",
    "HookResult",
    "HttpFilter",
    "InMemoryMetrics",
    "LocalSharedData",
    "Metadata",
    "MetadataError",
    "MetadataStore",
    "MetricKind",
    "MetricsBackend",
    "NoState",
    "PSEUDO_HEADERS",
    "Phase",
    "PlacementError",
    "ProcessingNeeds",
    "Reply",
    "Request",
    "Response",
    "SharedData",
    "Stream",
    "TlsInfo",
    "drive_async",
    "drive_sync",
    "header_changes",
    "validate_config",
]
