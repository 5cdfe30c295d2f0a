#!/usr/bin/env bash
# Create bench/.venv-peer with the PyPI peer `envoy-extproc-sdk` 0.1.1 at exact pins.
#
# Why a venv of its own: the peer needs ddtrace<2 (it imports ddtrace.Span) plus datadog<0.45 and
# grpclib<0.5; none of that belongs in envoykit's venv. Idempotent: a stamp holding the hash of
# peer/requirements.txt skips the install when nothing changed. Bounded: pip gets 10 minutes.
#
# Usage: bash bench/setup_peer.sh [--force]
# Env:   PEER_PYTHON  interpreter to build the venv from (default: the base interpreter of
#                     .venv, so the peer runs on the same CPython as envoykit).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="$here/.venv-peer"
reqs="$here/peer/requirements.txt"
stamp="$venv/.requirements.sha256"

if [[ -n "${PEER_PYTHON:-}" ]]; then
    python="$PEER_PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
    python="$("$repo/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
else
    python="$(command -v python3)"
fi

want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "peer venv up to date: $venv"
    exit 0
fi

rm -rf "$venv"
"$python" -m venv "$venv"
timeout 600 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"

# Prove the peer imports (with the alias package on the path, as noop_server.py runs it).
DD_TRACE_ENABLED=false PYTHONPATH="$here/peer" "$venv/bin/python" -c \
    'import envoy_extproc_sdk, grpc_health_check.v1.health_pb2_grpc; print("peer imports ok")'

echo "$want" > "$stamp"
echo "peer venv ready: $venv"
