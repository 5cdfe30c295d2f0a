"""Sidecar-only helpers of the ``jwt`` filter (crypto, JWKS fetching). Not frozen into Wasm."""
