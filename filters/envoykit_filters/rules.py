"""Request rules with Istio ``AuthorizationPolicy`` semantics, answered like Envoy's rbac filter.

Policies are ``ALLOW`` or ``DENY`` rule sets with Istio's field names, so a policy's ``rules``
can be pasted from an AuthorizationPolicy. The decision:

1. any ``DENY`` policy matches -> 403 ``RBAC: access denied``;
2. there are ``ALLOW`` policies and none matches -> 403 ``RBAC: access denied``;
3. otherwise the request goes on.

A policy matches when any of its rules does; a rule when its ``from`` (any source), ``to`` (any
operation) and every ``when`` condition hold; a source/operation when every field it sets holds.
JWT facts (``requestPrincipals``, ``request.auth.*``) come from the JWT filter's dynamic metadata:
namespace ``envoykit.jwt``, keys ``payload`` (the verified claims) and ``principal`` (``iss/sub``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from envoykit import FilterConfig, HttpFilter, Reply, Request

from ._clientip import IpAddress, client_ip, in_any, networks, parse_ip, parse_networks
from ._strmatch import StringPattern, any_matches

__all__ = ["Rules", "RulesConfig", "Policy", "Rule", "Source", "Operation", "Condition"]

DENIED_BODY = "RBAC: access denied"
JWT_NAMESPACE = "envoykit.jwt"

_CONDITION_KEYS = re.compile(
    r"^(request\.headers\[[^\]]+\]|source\.ip|remote\.ip|source\.port|destination\.ip|destination\.port"
    r"|request\.auth\.principal|request\.auth\.audiences|request\.auth\.presenter"
    r"|request\.auth\.claims(\[[^\]]+\])+|connection\.sni)$"
)
_IP_KEYS = ("source.ip", "remote.ip", "destination.ip")


class Source(FilterConfig):
    """Istio ``source``: who sends the request (every field given must hold)."""

    #: The connection's peer address (Envoy's source address).
    ipBlocks: tuple[str, ...] = ()
    notIpBlocks: tuple[str, ...] = ()
    #: The client address from x-forwarded-for (``xff_num_trusted_hops`` of the filter).
    remoteIpBlocks: tuple[str, ...] = ()
    notRemoteIpBlocks: tuple[str, ...] = ()
    #: ``iss/sub`` of the verified JWT; ``*`` = any authenticated request.
    requestPrincipals: tuple[str, ...] = ()
    notRequestPrincipals: tuple[str, ...] = ()

    @field_validator("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return parse_networks(value)


class Operation(FilterConfig):
    """Istio ``operation``: what the request does (every field given must hold)."""

    hosts: tuple[str, ...] = ()
    notHosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    notPorts: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    notMethods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    notPaths: tuple[str, ...] = ()


class From(FilterConfig):
    source: Source


class To(FilterConfig):
    operation: Operation


class Condition(FilterConfig):
    """Istio ``when``: ``key`` is one of ``request.headers[NAME]``, ``source.ip``, ``remote.ip``,
    ``source.port``, ``destination.ip``, ``destination.port``, ``request.auth.principal``,
    ``request.auth.audiences``, ``request.auth.presenter``, ``request.auth.claims[NAME]`` (nested:
    ``[a][b]``), ``connection.sni``."""

    key: str
    values: tuple[str, ...] = ()
    notValues: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _known_key(cls, value: str) -> str:
        if not _CONDITION_KEYS.match(value):
            raise ValueError(
                f"unsupported condition key {value!r} (use request.headers[NAME], source.ip, remote.ip, "
                "source.port, destination.ip, destination.port, request.auth.principal, "
                "request.auth.audiences, request.auth.presenter, request.auth.claims[NAME], connection.sni)"
            )
        return value

    @model_validator(mode="after")
    def _has_values(self) -> Condition:
        if not self.values and not self.notValues:
            raise ValueError("give values or notValues")
        if self.key in _IP_KEYS:
            parse_networks(self.values)
            parse_networks(self.notValues)
        return self


class Rule(FilterConfig):
    """Istio rule. ``from`` is spelled ``from`` in the file (``from_`` in Python)."""

    from_: tuple[From, ...] = ()
    to: tuple[To, ...] = ()
    when: tuple[Condition, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_keyword(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "from" in data:
            data = {("from_" if k == "from" else k): v for k, v in data.items()}
        return data


class Policy(FilterConfig):
    name: str = ""
    action: Literal["ALLOW", "DENY"] = "ALLOW"
    #: No rules: the policy matches nothing (an ALLOW policy without rules then denies everything).
    rules: tuple[Rule, ...] = ()


class RulesConfig(FilterConfig):
    policies: tuple[Policy, ...] = Field(min_length=1)
    #: For ``remoteIpBlocks`` / ``remote.ip``: proxies in front of Envoy appending to x-forwarded-for.
    xff_num_trusted_hops: int = Field(0, ge=0, le=32)
    #: Where the JWT filter leaves ``payload`` and ``principal``.
    jwt_metadata_namespace: str = JWT_NAMESPACE
    status: int = Field(403, ge=400, le=599)
    body: str = DENIED_BODY


@dataclass
class RulesState:
    pass


Check = Callable[["_Facts"], bool]


class _Facts:
    """What rules look at, computed at most once per request."""

    __slots__ = ("_jwt", "_remote", "_source", "filter", "request")

    def __init__(self, request: Request, flt: Rules) -> None:
        self.request = request
        self.filter = flt
        self._source: IpAddress | bool | None = False
        self._remote: IpAddress | bool | None = False
        self._jwt: Mapping[str, Any] | None = None

    @property
    def source(self) -> IpAddress | None:
        if self._source is False:
            self._source = parse_ip(self.request.attributes.source_address)
        return self._source  # type: ignore[return-value]

    @property
    def remote(self) -> IpAddress | None:
        if self._remote is False:
            self._remote = client_ip(self.request, self.filter.config.xff_num_trusted_hops)
        return self._remote  # type: ignore[return-value]

    @property
    def jwt(self) -> Mapping[str, Any]:
        if self._jwt is None:
            self._jwt = self.request.metadata.read(self.filter.config.jwt_metadata_namespace)
        return self._jwt

    @property
    def principal(self) -> str | None:
        value = self.jwt.get("principal")
        return value if isinstance(value, str) and value else None

    def claim(self, path: tuple[str, ...]) -> list[str]:
        value: Any = self.jwt.get("payload")
        for part in path:
            if not isinstance(value, Mapping) or part not in value:
                return []
            value = value[part]
        items = value if isinstance(value, list) else [value]
        return [v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for v in items]


def _patterns(values: tuple[str, ...], *, lower: bool = False) -> tuple[StringPattern, ...]:
    return tuple(StringPattern(v, lower=lower) for v in values)


def _host_values(request: Request) -> list[str]:
    authority = request.authority.lower()
    host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
    return [authority] if host == authority else [authority, host]


def _compile_source(source: Source) -> list[Check]:
    checks: list[Check] = []
    for blocks, negate, remote in (
        (source.ipBlocks, False, False),
        (source.notIpBlocks, True, False),
        (source.remoteIpBlocks, False, True),
        (source.notRemoteIpBlocks, True, True),
    ):
        if blocks:
            nets = networks(blocks)

            def ip_check(f: _Facts, nets: Any = nets, negate: bool = negate, remote: bool = remote) -> bool:
                ip = f.remote if remote else f.source
                hit = ip is not None and in_any(ip, nets)
                return hit != negate

            checks.append(ip_check)
    for principals, negate in ((source.requestPrincipals, False), (source.notRequestPrincipals, True)):
        if principals:
            checks.append(_pattern_check(_patterns(principals), negate, lambda f: [f.principal or ""]))
    return checks


def _pattern_check(
    patterns: tuple[StringPattern, ...], negate: bool, values: Callable[[_Facts], list[str]]
) -> Check:
    """True when any of ``values`` matches any pattern (inverted for ``not*`` fields);
    an empty string stands for "absent" and matches nothing."""

    def check(f: _Facts) -> bool:
        hit = any(v and any_matches(patterns, v) for v in values(f))
        return hit != negate

    return check


def _set_check(wanted: frozenset[str], negate: bool, value: Callable[[_Facts], str]) -> Check:
    return lambda f: (value(f) in wanted) != negate


def _compile_operation(op: Operation) -> list[Check]:
    checks: list[Check] = []
    for hosts, negate in ((op.hosts, False), (op.notHosts, True)):
        if hosts:
            checks.append(
                _pattern_check(_patterns(hosts, lower=True), negate, lambda f: _host_values(f.request))
            )
    for ports, negate in ((op.ports, False), (op.notPorts, True)):
        if ports:
            checks.append(
                _set_check(frozenset(ports), negate, lambda f: str(f.request.attributes.destination_port))
            )
    for methods, negate in ((op.methods, False), (op.notMethods, True)):
        if methods:
            checks.append(_set_check(frozenset(methods), negate, lambda f: f.request.method))
    for paths, negate in ((op.paths, False), (op.notPaths, True)):
        if paths:
            checks.append(_pattern_check(_patterns(paths), negate, lambda f: [f.request.path_only]))
    return checks


def _condition_values(key: str) -> Callable[[_Facts], list[str]]:
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1].lower()

        def header(f: _Facts) -> list[str]:
            values = f.request.headers.get_all(name)
            return [",".join(values)] if values else []

        return header
    if key.startswith("request.auth.claims["):
        path = tuple(re.findall(r"\[([^\]]+)\]", key[len("request.auth.claims") :]))
        return lambda f: f.claim(path)
    simple: dict[str, Callable[[_Facts], list[str]]] = {
        "source.port": lambda f: _opt(f.request.attributes.source_port),
        "destination.port": lambda f: _opt(f.request.attributes.destination_port),
        "request.auth.principal": lambda f: _opt(f.principal),
        "request.auth.audiences": lambda f: f.claim(("aud",)),
        "request.auth.presenter": lambda f: f.claim(("azp",)),
        "connection.sni": lambda f: _opt(f.request.attributes.tls.sni if f.request.attributes.tls else None),
    }
    return simple[key]


def _opt(value: object) -> list[str]:
    return [] if value is None else [str(value)]


def _compile_condition(cond: Condition) -> Check:
    if cond.key in _IP_KEYS:
        pos, neg = networks(cond.values), networks(cond.notValues)

        def ip_of(f: _Facts) -> IpAddress | None:
            if cond.key == "source.ip":
                return f.source
            if cond.key == "remote.ip":
                return f.remote
            return parse_ip(f.request.attributes.destination_address)

        def ip_cond(f: _Facts) -> bool:
            ip = ip_of(f)
            if pos and (ip is None or not in_any(ip, pos)):
                return False
            return not (neg and ip is not None and in_any(ip, neg))

        return ip_cond
    get = _condition_values(cond.key)
    pos_p, neg_p = _patterns(cond.values), _patterns(cond.notValues)

    def value_cond(f: _Facts) -> bool:
        values = get(f)
        if pos_p and not any(any_matches(pos_p, v) for v in values):
            return False
        return not (neg_p and any(any_matches(neg_p, v) for v in values))

    return value_cond


def _all(checks: list[Check]) -> Check:
    return lambda f: all(c(f) for c in checks)


def _compile_rule(rule: Rule) -> Check:
    parts: list[Check] = []
    if rule.from_:
        sources = [_all(_compile_source(s.source)) for s in rule.from_]
        parts.append(lambda f: any(s(f) for s in sources))
    if rule.to:
        operations = [_all(_compile_operation(t.operation)) for t in rule.to]
        parts.append(lambda f: any(o(f) for o in operations))
    parts.extend(_compile_condition(c) for c in rule.when)
    return _all(parts)


class Rules(HttpFilter[RulesConfig, RulesState]):
    """Allow or deny requests with Istio AuthorizationPolicy rules; denials look like Envoy's rbac."""

    name = "rules"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        compiled = [
            (p.name or f"policy{i}", p.action, [_compile_rule(r) for r in p.rules])
            for i, p in enumerate(self.config.policies)
        ]
        self._deny = [(name, rules) for name, action, rules in compiled if action == "DENY"]
        self._allow = [(name, rules) for name, action, rules in compiled if action == "ALLOW"]
        self._allowed = self.metrics.counter("allowed")
        self._denied = self.metrics.counter("denied")

    def on_request_headers(self, request: Request, state: RulesState) -> Reply | None:
        facts = _Facts(request, self)
        for name, rules in self._deny:
            if any(rule(facts) for rule in rules):
                return self._refuse(request, name)
        if self._allow:
            for name, rules in self._allow:
                if any(rule(facts) for rule in rules):
                    request.metadata["policy"] = name
                    self._allowed.inc()
                    return None
            return self._refuse(request, "none")
        self._allowed.inc()
        return None

    def _refuse(self, request: Request, policy: str) -> Reply:
        request.metadata["policy"] = policy
        request.metadata["decision"] = "deny"
        self._denied.inc()
        return Reply(
            self.config.status,
            self.config.body,
            details=f"rbac_access_denied_matched_policy[{policy}]",
        )
