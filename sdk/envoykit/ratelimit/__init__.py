"""A global rate-limit service compatible with envoyproxy/ratelimit (``envoykit ratelimit serve``).

Envoy's native ``envoy.filters.http.ratelimit`` filter asks it ``ShouldRateLimit`` for a domain
and descriptors; it answers from envoyproxy/ratelimit's YAML config (hot-reloaded from a
directory), counting in memory or in Redis (fixed or sliding windows, a bounded timeout with
fail-open/closed), with RateLimit headers in the answer and Prometheus counters per descriptor.
"""

from ._backends import Backend, BackendError, Hit, MemoryBackend, RedisBackend, make_backend
from ._config import DomainConfig, RateLimitRule, load_directory, parse_config
from ._limiter import MAX_UINT32, Decision, DescriptorResult, Limiter, LimiterStats
from ._server import DEFAULT_PORT, ConfigWatcher, RateLimitServer, RateLimitServicer, run_ratelimit

__all__ = [
    "DEFAULT_PORT",
    "MAX_UINT32",
    "Backend",
    "BackendError",
    "ConfigWatcher",
    "Decision",
    "DescriptorResult",
    "DomainConfig",
    "Hit",
    "Limiter",
    "LimiterStats",
    "MemoryBackend",
    "RateLimitRule",
    "RateLimitServer",
    "RateLimitServicer",
    "RedisBackend",
    "load_directory",
    "make_backend",
    "parse_config",
    "run_ratelimit",
]
