"""Sidecar-only helpers of the ``opa`` filter (the regorus engine). Not frozen into Wasm."""
