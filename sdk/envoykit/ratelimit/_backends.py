"""Where counters live: in memory (one process) or Redis (shared by every service replica).

A backend does one thing: add hits to window counters and report the counts, for all of a
request's descriptors at once. ``RedisBackend`` does it in one pipelined round trip
(``INCRBY`` + ``EXPIRE`` per key, plus ``GET`` of the previous window for the sliding algorithm)
under a hard deadline (default 50 ms), so a slow or dead Redis costs a request at most that
long. Keys carry a hash tag (``{domain_key_value_}``), so one descriptor's windows share a Redis
Cluster slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Backend", "BackendError", "Hit", "MemoryBackend", "RedisBackend", "make_backend"]


class BackendError(Exception):
    """The backend could not answer in time (down, slow, refused)."""


@dataclass(frozen=True, slots=True)
class Hit:
    #: Counter of the current window.
    key: str
    #: Counter of the previous window (sliding algorithm), read only.
    previous: str | None
    hits: int
    #: Seconds the current counter must live.
    ttl: int


class Backend(Protocol):
    async def hit(self, hits: Sequence[Hit]) -> list[tuple[int, int]]:
        """(count after adding, previous window's count) per hit, in order."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Counters in this process (the embedded default, for one replica and for the demo)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._next_sweep = 0.0

    async def hit(self, hits: Sequence[Hit]) -> list[tuple[int, int]]:
        now = self.clock()
        if now >= self._next_sweep:
            self._sweep(now)
        out = []
        counts = self._counts
        for h in hits:
            count, expires = counts.get(h.key, (0, 0.0))
            if expires <= now:
                count = 0
            count += h.hits
            counts[h.key] = (count, now + h.ttl)
            previous = 0
            if h.previous is not None:
                prev, prev_expires = counts.get(h.previous, (0, 0.0))
                previous = prev if prev_expires > now else 0
            out.append((count, previous))
        return out

    def _sweep(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        self._next_sweep = now + 10.0

    async def close(self) -> None:
        self._counts.clear()


class RedisBackend:
    """Counters in Redis (standalone or Cluster-friendly keys), redis-py asyncio."""

    def __init__(self, url: str, *, timeout: float = 0.05, pool_size: int = 64) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.timeout = timeout
        self._redis: Any = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=pool_size,
        )

    async def hit(self, hits: Sequence[Hit]) -> list[tuple[int, int]]:
        from redis.exceptions import RedisError

        pipe = self._redis.pipeline(transaction=False)
        for h in hits:
            pipe.incrby(h.key, h.hits)
            pipe.expire(h.key, h.ttl)
            if h.previous is not None:
                pipe.get(h.previous)
        try:
            async with asyncio.timeout(self.timeout):
                replies = await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            raise BackendError(f"redis {self.url}: {type(exc).__name__}: {exc}") from None
        out = []
        i = 0
        for h in hits:
            count = int(replies[i])
            i += 2
            previous = 0
            if h.previous is not None:
                previous = int(replies[i] or 0)
                i += 1
            out.append((count, previous))
        return out

    async def close(self) -> None:
        await self._redis.aclose()


def make_backend(redis_url: str | None, *, timeout: float = 0.05) -> Backend:
    """The one place a backend is chosen: Redis when a URL is given, else in-memory."""
    if redis_url:
        return RedisBackend(redis_url, timeout=timeout)
    return MemoryBackend()
