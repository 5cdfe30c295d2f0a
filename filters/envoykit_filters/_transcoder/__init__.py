"""Internals of the ``grpc-json-transcoder`` filter (sidecar-only: needs protobuf)."""
