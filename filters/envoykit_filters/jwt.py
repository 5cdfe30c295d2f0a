"""``jwt``: Envoy ``jwt_authn``'s provider and rule model, verified in the sidecar.

Providers use ``jwt_authn``'s field names (``issuer``, ``audiences``, ``remote_jwks``,
``local_jwks``, ``from_headers``, ``from_params``, ``forward``, ``forward_payload_header``,
``claim_to_headers``, ``payload_in_metadata``, ``clock_skew_seconds``...), so a team pastes a
provider block from its Envoy config. Rules pick a requirement per path/method (one provider,
any/all of several, allow missing, allow missing or failed) with ``jwt_authn``'s semantics, and
a failure is answered with ``jwt_authn``'s status, body and ``WWW-Authenticate`` header.

Sidecar-only: it fetches JWKS over the network (its request hook is ``async``), and its crypto
is jwcrypto's. On success it writes ``payload`` (the verified claims) and ``principal``
(``"<iss>/<sub>"``) into its metadata namespace (``envoykit.jwt``), for later filters (rules,
OPA) and access logs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from envoykit import HttpFilter, Reply, Request

from ._jwt.config import JwtConfig, JwtProvider, JwtRequirement, JwtRule, RuleMatch
from ._jwt.jwks import JwksSource, LocalJwks, RemoteJwks
from ._jwt.token import (
    ParsedJwt,
    Status,
    audiences_allowed,
    check_time,
    parse,
    sanitize_audiences,
    verify_signature,
)

__all__ = ["Jwt", "JwtConfig", "JwtProvider", "JwtRequirement", "JwtRule", "Status"]

log = logging.getLogger("envoykit.filters.jwt")

_DEFAULT_HEADER = ("authorization", "Bearer ")
_DEFAULT_PARAM = "access_token"
#: Tokens whose signature a provider verified, remembered per provider (oldest evicted first).
VERIFIED_CACHE_SIZE = 1024


@dataclass
class _Verified:
    status: Status
    jwt: ParsedJwt | None = None
    header: str | None = None  # the request header the token came from (removed unless forward)


@dataclass
class JwtState:
    #: Per provider name: the outcome of verifying its token in this request.
    results: dict[str, _Verified] = field(default_factory=dict)


class _Provider:
    """One provider compiled from config: where its token is, its keys, its checks."""

    def __init__(self, name: str, cfg: JwtProvider, base_dir: Path | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.audiences = sanitize_audiences(cfg.audiences)
        self.algorithms = frozenset(cfg.algorithms)
        headers = [(h.name.lower(), h.value_prefix) for h in cfg.from_headers]
        params = list(cfg.from_params)
        if not headers and not params and not cfg.from_cookies:
            headers, params = [_DEFAULT_HEADER], [_DEFAULT_PARAM]
        self.headers, self.params, self.cookies = headers, params, list(cfg.from_cookies)
        #: token -> (the key list that verified its signature, the parsed token). Only the parse
        #: and the signature are remembered: issuer, time and audiences are checked every time,
        #: and a new key list (a JWKS refresh) means verifying again.
        self.verified: dict[str, tuple[list[Any], ParsedJwt]] = {}
        self.jwks: JwksSource
        if cfg.local_jwks is not None:
            text = cfg.local_jwks.inline_string
            if text is None:
                path = Path(cfg.local_jwks.filename or "")
                text = (base_dir / path if base_dir and not path.is_absolute() else path).read_text()
            self.jwks = LocalJwks(text)
        else:
            assert cfg.remote_jwks is not None  # the config validator guarantees one of them
            remote = cfg.remote_jwks
            self.jwks = RemoteJwks(
                remote.http_uri.uri,
                timeout=remote.http_uri.timeout,
                cache_duration=remote.cache_duration,
                min_refetch_interval=remote.min_refetch_interval,
            )

    def extract(self, request: Request) -> tuple[str, str | None] | None:
        """``(token, header name or None)`` from the first location that has one."""
        for name, prefix in self.headers:
            for value in request.headers.get_all(name):
                if prefix:
                    if not value.startswith(prefix):
                        continue
                    value = value[len(prefix) :]
                token = value.strip()
                if token:
                    return token, name
        if self.params and request.query:
            query = parse_qs(request.query, keep_blank_values=False)
            for param in self.params:
                if query.get(param):
                    return query[param][0], None
        if self.cookies:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load("; ".join(request.headers.get_all("cookie")))
            except CookieError:
                return None
            for cookie in self.cookies:
                if cookie in jar and jar[cookie].value:
                    return jar[cookie].value, None
        return None

    def remember(self, token: str, keys: list[Any], jwt: ParsedJwt) -> None:
        verified = self.verified
        if len(verified) >= VERIFIED_CACHE_SIZE:
            try:
                del verified[next(iter(verified))]
            except (KeyError, RuntimeError, StopIteration):  # another thread evicted it first
                pass
        verified[token] = (keys, jwt)


def _claim(payload: dict[str, Any], name: str) -> Any:
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _claim_header_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return ",".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return None


def _rule_matches(match: RuleMatch, request: Request) -> bool:
    path = request.path_only
    if match.methods and request.method not in match.methods:
        return False
    if match.safe_regex is not None:
        flags = 0 if match.case_sensitive else re.IGNORECASE
        return re.fullmatch(match.safe_regex.regex, path, flags) is not None
    if not match.case_sensitive:
        path = path.lower()
    if match.prefix is not None:
        return path.startswith(match.prefix if match.case_sensitive else match.prefix.lower())
    if match.path is not None:
        return path == (match.path if match.case_sensitive else match.path.lower())
    prefix = match.path_separated_prefix or ""
    prefix = prefix if match.case_sensitive else prefix.lower()
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class Jwt(HttpFilter[JwtConfig, JwtState]):
    """Verify JWTs like Envoy's ``jwt_authn`` (sidecar placement: JWKS fetching is async I/O)."""

    name = "jwt"

    def __new__(cls, config: Any = None, *args: Any, **kwargs: Any) -> Jwt:
        # Providers with local keys only never wait for anything: the sync variant lets a
        # `threads` sidecar run the hook on its worker thread, without a hop to the event loop.
        if cls is Jwt and _local_keys_only(config):
            return super().__new__(_LocalKeysJwt)
        return super().__new__(cls)

    def __init__(self, *args: Any, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock
        self.providers = {name: _Provider(name, cfg) for name, cfg in self.config.providers.items()}
        self._rules: tuple[JwtRule, ...] = tuple(self.config.rules)
        # Headers this filter sets from verified tokens: a client cannot send them itself.
        self._owned_headers = sorted(
            {c.header_name.lower() for p in self.config.providers.values() for c in p.claim_to_headers}
            | {
                p.forward_payload_header.lower()
                for p in self.config.providers.values()
                if p.forward_payload_header
            }
        )
        self._allowed = self.metrics.counter("allowed")
        self._denied = self.metrics.counter("denied")

    async def on_request_headers(self, request: Request, state: JwtState) -> Reply | None:
        for name in self._owned_headers:
            request.headers.remove(name)
        requirement = next((r.requires for r in self._rules if _rule_matches(r.match, request)), None)
        if requirement is None:
            return None
        status = await self._check(requirement, request, state)
        if status is not Status.OK:
            self._denied.inc()
            return self._deny(status, request)
        self._allowed.inc()
        self._apply(request, state)
        return None

    # -- requirements --------------------------------------------------------------------------
    async def _check(self, req: JwtRequirement, request: Request, state: JwtState) -> Status:
        if req.provider_name is not None:
            return (await self._verify(req.provider_name, request, state)).status
        if req.provider_and_audiences is not None:
            pa = req.provider_and_audiences
            return (
                await self._verify(pa.provider_name, request, state, sanitize_audiences(pa.audiences))
            ).status
        if req.requires_all is not None:
            for child in req.requires_all.requirements:
                status = await self._check(child, request, state)
                if status is not Status.OK:
                    return status
            return Status.OK
        if req.requires_any is not None:
            failures = []
            for child in req.requires_any.requirements:
                status = await self._check(child, request, state)
                if status is Status.OK:
                    return status
                failures.append(status)
            return next((s for s in failures if s is not Status.MISSING), Status.MISSING)
        # allow_missing / allow_missing_or_failed: verify whatever token any provider finds.
        failures = []
        for name in self.providers:
            status = (await self._verify(name, request, state)).status
            if status is Status.OK:
                return status
            failures.append(status)
        failure = next((s for s in failures if s is not Status.MISSING), Status.OK)
        return Status.OK if req.allow_missing_or_failed is not None else failure

    async def _verify(
        self, name: str, request: Request, state: JwtState, audiences: frozenset[str] | None = None
    ) -> _Verified:
        key = name if audiences is None else f"{name}\0{sorted(audiences)}"
        if key not in state.results:
            state.results[key] = await self._verify_uncached(self.providers[name], request, audiences)
        return state.results[key]

    async def _verify_uncached(
        self, provider: _Provider, request: Request, audiences: frozenset[str] | None
    ) -> _Verified:
        found = provider.extract(request)
        if found is None:
            return _Verified(Status.MISSING)
        token, header = found
        cached = provider.verified.get(token)
        jwt = cached[1] if cached is not None else parse(token)
        if isinstance(jwt, Status):
            return _Verified(jwt)
        cfg = provider.cfg
        if cfg.issuer and jwt.iss != cfg.issuer:
            return _Verified(Status.UNKNOWN_ISSUER)
        status = check_time(
            jwt, int(self._clock()), cfg.clock_skew_seconds, require_expiration=cfg.require_expiration
        )
        if status is not Status.OK:
            return _Verified(status)
        if not audiences_allowed(jwt, provider.audiences if audiences is None else audiences):
            return _Verified(Status.AUDIENCE_NOT_ALLOWED)
        keys = await provider.jwks.keys()
        if keys is None:
            return _Verified(Status.JWKS_FETCH_FAIL)
        if not keys:
            return _Verified(Status.NO_VALID_KEYS)
        if cached is not None and cached[0] is keys:
            return _Verified(Status.OK, jwt, header)  # verified with these very keys before
        status = verify_signature(jwt, keys, provider.algorithms)
        if status is Status.KID_ALG_MISMATCH and jwt.kid and await provider.jwks.refetch_for_unknown_kid():
            keys = await provider.jwks.keys()
            status = verify_signature(jwt, keys or [], provider.algorithms)
        if status is not Status.OK:
            return _Verified(status, None, header)
        if keys:
            provider.remember(token, keys, jwt)
        return _Verified(status, jwt, header)

    # -- outcomes ------------------------------------------------------------------------------
    def _apply(self, request: Request, state: JwtState) -> None:
        principal_set = False
        for key, result in state.results.items():
            if result.jwt is None:
                continue
            provider = self.providers[key.split("\0", 1)[0]]
            cfg, jwt = provider.cfg, result.jwt
            if not cfg.forward and result.header is not None:
                request.headers.remove(result.header)
            if cfg.forward_payload_header:
                value = jwt.payload_b64 + (
                    "=" * (-len(jwt.payload_b64) % 4) if cfg.pad_forward_payload_header else ""
                )
                request.headers.set(cfg.forward_payload_header, value)
            for mapping in cfg.claim_to_headers:
                claim = _claim_header_value(_claim(jwt.payload, mapping.claim_name))
                if claim is not None:
                    request.headers.set(mapping.header_name, claim.encode())
            if cfg.payload_in_metadata:
                request.metadata[cfg.payload_in_metadata] = jwt.payload
            if cfg.header_in_metadata:
                request.metadata[cfg.header_in_metadata] = jwt.header
            if not principal_set:
                principal_set = True
                if cfg.payload_in_metadata != "payload":  # else just written
                    request.metadata["payload"] = jwt.payload
                request.metadata["principal"] = f"{jwt.iss}/{jwt.sub}"
                request.metadata["provider"] = provider.name

    def _deny(self, status: Status, request: Request) -> Reply:
        # Envoy's realm is the request URL, its path cut at 256 characters (measured).
        realm = f'Bearer realm="{request.scheme or "http"}://{request.authority}{request.path[:256]}"'
        if status is not Status.MISSING:
            realm += ', error="invalid_token"'
        code = 403 if status is Status.AUDIENCE_NOT_ALLOWED else 401
        details = "jwt_authn_access_denied{" + status.value.replace(" ", "_") + "}"
        return Reply(code, status.value, headers={"www-authenticate": realm}, details=details)


def _local_keys_only(config: Any) -> bool:
    try:
        cfg = config if isinstance(config, JwtConfig) else JwtConfig.model_validate(config)
    except Exception:  # noqa: BLE001 - the regular class reports the error, with its field
        return False
    return all(p.local_jwks is not None for p in cfg.providers.values())


class _LocalKeysJwt(Jwt):
    """``Jwt`` whose providers all have local JWKS (what ``Jwt(...)`` returns for such a config).

    Same checks and answers; the hook is synchronous, because with local keys no step awaits
    anything (no JWKS fetch, no refetch)."""

    name = "jwt"

    def on_request_headers(self, request: Request, state: JwtState) -> Reply | None:  # type: ignore[override]
        step = Jwt.on_request_headers(self, request, state)
        try:
            step.send(None)
        except StopIteration as done:
            result: Reply | None = done.value
            return result
        step.close()
        raise RuntimeError("jwt: a provider with local keys waited for I/O")
