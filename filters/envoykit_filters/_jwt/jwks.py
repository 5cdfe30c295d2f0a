"""Where a provider's keys come from: inline/file JWKS, or a remote JWKS cached and refreshed.

Remote JWKS behaviour (the sidecar's event loop does the I/O, with httpx):

- the first request that needs keys fetches them (concurrent requests share that one fetch);
- once the cache is older than ``cache_duration`` the next request starts a refresh in the
  background and is answered with the cached keys meanwhile;
- a token whose ``kid`` is not in the cache triggers one refetch, at most once per
  ``min_refetch_interval`` (so a flood of made-up kids cannot hammer the JWKS endpoint);
- if the endpoint is down, cached keys keep working; with no keys at all, requests are answered
  "Jwks remote fetch is failed" and a new attempt is made at most once per ``min_refetch_interval``.

Time comes from an injectable ``clock`` (monotonic seconds) so tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
from jwcrypto import jwk

from .token import parse_jwks

__all__ = ["JwksSource", "LocalJwks", "RemoteJwks"]

log = logging.getLogger("envoykit.filters.jwt")


class JwksSource:
    """Keys for one provider."""

    remote = False

    async def keys(self) -> list[jwk.JWK] | None:
        """The keys to verify with now; ``None`` when there are none (remote fetch failed)."""
        raise NotImplementedError

    async def refetch_for_unknown_kid(self) -> bool:
        """Fetch again because a token's kid is unknown; True if new keys arrived."""
        return False


class LocalJwks(JwksSource):
    def __init__(self, text: str) -> None:
        self._keys = parse_jwks(text)

    async def keys(self) -> list[jwk.JWK] | None:
        return self._keys


class RemoteJwks(JwksSource):
    remote = True

    def __init__(
        self,
        uri: str,
        *,
        timeout: float,
        cache_duration: float,
        min_refetch_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri
        self.timeout = timeout
        self.cache_duration = cache_duration
        self.min_refetch_interval = min_refetch_interval
        self.clock = clock
        self._keys: list[jwk.JWK] | None = None
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not
        self._inflight: asyncio.Task[bool] | None = None
        #: Number of HTTP fetches attempted (tests and metrics read it).
        self.fetches = 0

    @property
    def refreshing(self) -> asyncio.Task[bool] | None:
        """The fetch in progress, if any (tests await it instead of sleeping)."""
        task = self._inflight
        return task if task is not None and not task.done() else None

    async def keys(self) -> list[jwk.JWK] | None:
        now = self.clock()
        if self._keys is None:
            if now - self._attempted_at >= self.min_refetch_interval or self.refreshing:
                await self._fetch_shared()
            return self._keys
        if now - self._fetched_at >= self.cache_duration and (
            now - self._attempted_at >= self.min_refetch_interval
        ):
            self._start_fetch()  # stale: refresh in the background, answer with what we have
        return self._keys

    async def refetch_for_unknown_kid(self) -> bool:
        if self.refreshing is None and self.clock() - self._attempted_at < self.min_refetch_interval:
            return False
        before = self._keys
        await self._fetch_shared()
        return self._keys is not before

    # -- fetching ----------------------------------------------------------------------------
    def _start_fetch(self) -> asyncio.Task[bool]:
        task = self.refreshing
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            self._attempted_at = self.clock()
            task = asyncio.get_running_loop().create_task(self._fetch(), name=f"jwks {self.uri}")
            self._inflight = task
        return task

    async def _fetch_shared(self) -> bool:
        return await asyncio.shield(self._start_fetch())

    async def _fetch(self) -> bool:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.get(self.uri, headers={"accept": "application/json"})
            response.raise_for_status()
            keys = parse_jwks(response.text)
            if not keys:
                raise ValueError("the JWKS has no usable signing keys")
        except (httpx.HTTPError, ValueError) as exc:
            kept = "keeping the cached keys" if self._keys else "no keys cached"
            log.warning("JWKS fetch from %s failed (%s); %s", self.uri, exc or type(exc).__name__, kept)
            return False
        self._keys = keys
        self._fetched_at = self.clock()
        log.info("JWKS fetched from %s: %d keys", self.uri, len(keys))
        return True
