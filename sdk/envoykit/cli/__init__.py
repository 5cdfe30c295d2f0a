"""The ``envoykit`` command line: serve, envoy-config, check, demo."""

from ._app import app, main

__all__ = ["app", "main"]
