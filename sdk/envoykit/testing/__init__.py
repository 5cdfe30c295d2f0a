"""Testing kit for filter authors.

- ``Harness``: drive a filter or chain in-process, no Envoy needed.
- pytest fixtures (registered automatically as the ``envoykit`` pytest plugin) that start a real
  Envoy, an echo upstream and the sidecar: see ``envoykit.testing.plugin``.
"""

from ._harness import Exchange, Harness, Sent, UpstreamResponse

__all__ = ["Exchange", "Harness", "Sent", "UpstreamResponse"]
