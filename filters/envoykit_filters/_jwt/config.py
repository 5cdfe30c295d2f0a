"""The ``jwt`` filter's config: Envoy ``jwt_authn`` field names, so provider blocks paste over.

Durations accept Envoy's JSON/YAML spellings (``"300s"``, ``"1.5s"``, ``{seconds: 300}``) and
plain numbers of seconds. Fields of ``jwt_authn`` that only make sense inside Envoy
(``http_uri.cluster``, ``remote_jwks.async_fetch``, ``retry_policy``) are accepted and ignored,
so a pasted block loads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from envoykit import FilterConfig

from .token import DEFAULT_ALGORITHMS, IMPLEMENTED_ALGORITHMS

__all__ = ["JwtConfig", "JwtProvider", "JwtRequirement", "JwtRule", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``"300s"``, ``"1.5s"``, ``"500ms"``, ``{"seconds": 3, "nanos": 0}`` or a number -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '300s'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if not m:
            raise ValueError(f"{value!r} is not a duration (use e.g. '300s', '1.5s' or '500ms')")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    elif isinstance(value, dict) and set(value) <= {"seconds", "nanos"}:
        seconds = float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    else:
        raise ValueError("a duration is a number of seconds or a string like '300s'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class HttpUri(FilterConfig):
    uri: str = Field(pattern=r"^https?://")
    #: Accepted for pasting from Envoy; the sidecar fetches ``uri`` itself.
    cluster: str | None = None
    timeout: Duration = 1.0


class RemoteJwksConfig(FilterConfig):
    http_uri: HttpUri
    #: How long fetched keys are fresh; Envoy's default is 10 minutes.
    cache_duration: Duration = 600.0
    #: envoykit: at most one refetch per interval for unknown kids or a failing endpoint.
    min_refetch_interval: Duration = 30.0
    #: Accepted for pasting from Envoy and ignored (envoykit always fetches asynchronously).
    async_fetch: dict[str, Any] | None = None
    retry_policy: dict[str, Any] | None = None


class LocalJwksConfig(FilterConfig):
    """An Envoy DataSource: exactly one of ``inline_string`` or ``filename``."""

    inline_string: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one(self) -> LocalJwksConfig:
        if (self.inline_string is None) == (self.filename is None):
            raise ValueError("give exactly one of inline_string or filename")
        return self


class HeaderLocation(FilterConfig):
    name: str = Field(min_length=1)
    value_prefix: str = ""


class ClaimToHeader(FilterConfig):
    header_name: str = Field(min_length=1)
    #: A top-level claim, or a nested one with dots (``realm.role``).
    claim_name: str = Field(min_length=1)


class JwtProvider(FilterConfig):
    """Envoy's ``JwtProvider`` (same field names), plus ``algorithms``."""

    issuer: str = ""
    audiences: list[str] = Field(default_factory=list)
    remote_jwks: RemoteJwksConfig | None = None
    local_jwks: LocalJwksConfig | None = None
    forward: bool = False
    from_headers: list[HeaderLocation] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    from_cookies: list[str] = Field(default_factory=list)
    forward_payload_header: str | None = None
    pad_forward_payload_header: bool = False
    payload_in_metadata: str | None = None
    header_in_metadata: str | None = None
    claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    clock_skew_seconds: int = Field(60, ge=0)
    require_expiration: bool = False
    #: envoykit: the signature algorithms accepted (``none`` never is; HS* only when listed).
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1)

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        for alg in value:
            if alg not in IMPLEMENTED_ALGORITHMS:
                raise ValueError(
                    f"{alg!r} is not an accepted algorithm (use {sorted(IMPLEMENTED_ALGORITHMS)})"
                )
        return value

    @model_validator(mode="after")
    def _one_jwks(self) -> JwtProvider:
        if (self.remote_jwks is None) == (self.local_jwks is None):
            raise ValueError("give exactly one of remote_jwks or local_jwks")
        return self


class ProviderAndAudiences(FilterConfig):
    provider_name: str
    audiences: list[str] = Field(min_length=1)


class RequirementList(FilterConfig):
    requirements: list[JwtRequirement] = Field(min_length=1)


class JwtRequirement(FilterConfig):
    """Exactly one of the fields, as in Envoy's ``JwtRequirement``."""

    provider_name: str | None = None
    provider_and_audiences: ProviderAndAudiences | None = None
    requires_any: RequirementList | None = None
    requires_all: RequirementList | None = None
    allow_missing: dict[str, Any] | None = None
    allow_missing_or_failed: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JwtRequirement:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of provider_name, provider_and_audiences, requires_any, "
                f"requires_all, allow_missing, allow_missing_or_failed (got {given or 'none'})"
            )
        return self

    def provider_names(self) -> set[str]:
        if self.provider_name is not None:
            return {self.provider_name}
        if self.provider_and_audiences is not None:
            return {self.provider_and_audiences.provider_name}
        group = self.requires_any or self.requires_all
        return set().union(*(r.provider_names() for r in group.requirements)) if group else set()


RequirementList.model_rebuild()


class SafeRegex(FilterConfig):
    regex: str


class RuleMatch(FilterConfig):
    """Envoy's route match subset: one of ``prefix``, ``path``, ``safe_regex``,
    ``path_separated_prefix``; plus envoykit's ``methods``."""

    prefix: str | None = None
    path: str | None = None
    safe_regex: SafeRegex | None = None
    path_separated_prefix: str | None = None
    case_sensitive: bool = True
    methods: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_path_matcher(self) -> RuleMatch:
        given = [self.prefix, self.path, self.safe_regex, self.path_separated_prefix]
        if sum(x is not None for x in given) != 1:
            raise ValueError("give exactly one of prefix, path, safe_regex, path_separated_prefix")
        if self.safe_regex is not None:
            try:
                re.compile(self.safe_regex.regex)
            except re.error as exc:
                raise ValueError(f"safe_regex: {exc}") from None
        return self


class JwtRule(FilterConfig):
    match: RuleMatch
    #: No requirement: requests matching this rule are not checked.
    requires: JwtRequirement | None = None


class JwtConfig(FilterConfig):
    providers: dict[str, JwtProvider] = Field(min_length=1)
    #: First matching rule wins; a request no rule matches is not checked.
    rules: list[JwtRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _known_providers(self) -> JwtConfig:
        for i, rule in enumerate(self.rules):
            if rule.requires is None:
                continue
            unknown = rule.requires.provider_names() - set(self.providers)
            if unknown:
                raise ValueError(f"rules[{i}].requires names unknown provider(s) {sorted(unknown)}")
        return self
