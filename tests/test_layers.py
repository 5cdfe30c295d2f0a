"""The layering rules from docs/architecture.md, checked on the source (not by convention).

SDK core → runtimes → filters → CLI: the core is pure (no I/O libraries, no runtime imports),
filters use only the public ``envoykit`` API, and nothing below the CLI imports it.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SDK = ROOT / "sdk" / "envoykit"
FILTERS = ROOT / "filters" / "envoykit_filters"

CORE_FILES = sorted([*SDK.glob("_*.py"), SDK / "__init__.py"])
CORE_ALLOWED_THIRD_PARTY = {"pydantic"}  # config models; the Wasm build swaps in a shim
SUBPACKAGES = {p.name for p in SDK.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def imports(path: Path) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    source_root = ROOT / path.relative_to(ROOT).parts[0]  # sdk/ or filters/
    package = ".".join(path.relative_to(source_root).parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                out.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                out.add(node.module)
    return out


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_is_pure(path: Path):
    for name in imports(path):
        if top(name) == "envoykit":
            sub = name.split(".")[1] if "." in name else ""
            assert sub not in SUBPACKAGES, f"{path.name} (core) imports {name}: core must not import runtimes"
        else:
            assert top(name) in sys.stdlib_module_names or top(name) in CORE_ALLOWED_THIRD_PARTY, (
                f"{path.name} (core) imports {name}: the core is pure Python with no I/O libraries"
            )


#: The gRPC-JSON transcoder's subject is protobuf (the user's service messages, never Envoy's
#: protocol): it alone may use ``google.protobuf``; it is sidecar-only.
PROTOBUF_FILTERS = {FILTERS / "transcoder.py", *(FILTERS / "_transcoder").glob("*.py")}


@pytest.mark.parametrize("path", sorted(FILTERS.rglob("*.py")), ids=lambda p: p.name)
def test_filters_use_only_the_public_sdk(path: Path):
    for name in imports(path):
        if path in PROTOBUF_FILTERS and (name == "google.protobuf" or name.startswith("google.protobuf.")):
            continue
        assert top(name) not in {"grpc", "google", "envoy", "prometheus_client"}, (
            f"{path.name} imports {name}"
        )
        if top(name) == "envoykit":
            assert name == "envoykit", (
                f"{path.name} imports {name}: filters use only the public `envoykit` API"
            )


INPROXY_FILES = sorted((SDK / "inproxy").glob("*.py"))


@pytest.mark.parametrize("path", INPROXY_FILES, ids=lambda p: p.name)
def test_inproxy_runtime_is_freezable(path: Path):
    """It is frozen into a Wasm module: the stdlib and the SDK core only (no gRPC, no YAML...)."""
    for name in imports(path):
        if top(name) == "envoykit":
            sub = name.split(".")[1] if "." in name else ""
            assert sub in ("", "inproxy") or sub not in SUBPACKAGES, f"{path.name} imports {name}"
        else:
            assert top(name) in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_nothing_below_the_cli_imports_it():
    for path in SDK.rglob("*.py"):
        if "cli" in path.relative_to(SDK).parts:
            continue
        for name in imports(path):
            assert not name.startswith("envoykit.cli"), f"{path} imports {name}"


def test_public_api_is_pinned():
    import envoykit

    assert sorted(envoykit.__all__) == sorted(
        [
            "Attributes", "BodyMode", "Chain", "ChainObserver", "ConfigError", "Counter",
            "DEFAULT_ERROR_REPLY", "EmptyConfig", "EnvoykitError", "FailureMode", "FilterConfig",
            "FilterDefinitionError", "FilterMetrics", "Gauge", "HeaderError", "Headers", "Histogram",
            "HookResult", "HttpFilter", "InMemoryMetrics", "LocalSharedData", "SharedData",
            "Metadata", "MetadataError", "MetadataStore", "MetricKind", "MetricsBackend", "NoState",
            "PSEUDO_HEADERS", "Phase", "PlacementError", "ProcessingNeeds", "Reply", "Request",
            "Response", "Stream", "TlsInfo", "drive_async", "drive_sync", "header_changes",
            "validate_config",
        ]
    )  # fmt: skip
    for name in envoykit.__all__:
        assert hasattr(envoykit, name)
