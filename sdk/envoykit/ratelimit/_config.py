"""envoyproxy/ratelimit's YAML config, unchanged: parsing, validation and descriptor matching.

A file holds one ``domain`` and a tree of ``descriptors`` (``key``, optional ``value``, optional
``rate_limit``, nested ``descriptors``, ``shadow_mode``, ``detailed_metric``). Matching follows
envoyproxy/ratelimit: a request descriptor's entries walk the tree level by level, trying
``key_value`` first, then wildcard values (``value: foo*``, a prefix), then the bare ``key``; the
limit applies only if the last entry lands on a node with a ``rate_limit``. Errors name the file,
the path in the document (``descriptors[1].rate_limit.unit``) and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._errors import ConfigError

__all__ = [
    "UNIT_SECONDS",
    "DescriptorNode",
    "DomainConfig",
    "RateLimitRule",
    "RuleSet",
    "load_directory",
    "parse_config",
]

#: The units envoyproxy/ratelimit accepts, and their window lengths (its ``UnitToDivider``: a
#: month is 30 days, a year 365 days, windows aligned on the Unix epoch).
UNIT_SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
_DESCRIPTOR_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric"}
_LIMIT_KEYS = {"unit", "requests_per_unit", "unlimited", "name", "replaces"}


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """A configured limit (or an unlimited marker) at one node of the tree."""

    #: Stats key: ``domain.key_value.key2`` (request values instead when ``detailed_metric``).
    full_key: str
    requests_per_unit: int
    unit: str
    unlimited: bool = False
    shadow_mode: bool = False
    name: str = ""
    replaces: tuple[str, ...] = ()

    @property
    def window(self) -> int:
        return UNIT_SECONDS[self.unit]


@dataclass(slots=True)
class DescriptorNode:
    limit: RateLimitRule | None = None
    detailed_metric: bool = False
    children: dict[str, DescriptorNode] = field(default_factory=dict)
    #: ``key_valueprefix`` (the ``*`` dropped) for each wildcard child, in file order.
    wildcards: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class DomainConfig:
    domain: str
    source: str
    root: DescriptorNode
    #: Memoised ``find`` (a config snapshot never changes; a reload builds new objects).
    _found: dict[tuple[tuple[str, str], ...], RateLimitRule | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def find_cached(self, entries: tuple[tuple[str, str], ...]) -> RateLimitRule | None:
        """``find``, memoised (bounded: cleared when full, as request values are unbounded)."""
        try:
            return self._found[entries]
        except KeyError:
            pass
        found = self.find(entries)
        if len(self._found) >= 50_000:
            self._found.clear()
        self._found[entries] = found
        return found

    def find(self, entries: Sequence[tuple[str, str]]) -> RateLimitRule | None:
        """The limit for one request descriptor, envoyproxy/ratelimit's matching rules."""
        children = self.root.children
        prev = self.root
        found: RateLimitRule | None = None
        detailed = False
        last = len(entries) - 1
        for i, (key, value) in enumerate(entries):
            final = f"{key}_{value}"
            node = children.get(final)
            if node is None:
                for prefix, wildcard in prev.wildcards:
                    if final.startswith(prefix):
                        node = children[wildcard]
                        break
            if node is None:
                node = children.get(key)
            if node is None:
                break
            detailed = detailed or node.detailed_metric
            if node.limit is not None and i == last:
                found = node.limit
                if detailed:  # metrics per request value instead of rolled up into the config key
                    parts = ".".join(f"{k}_{v}" for k, v in entries)
                    found = _with_key(found, f"{self.domain}.{parts}")
            if not node.children:
                break
            children = node.children
            prev = node
        return found


def _with_key(rule: RateLimitRule, key: str) -> RateLimitRule:
    return RateLimitRule(
        key, rule.requests_per_unit, rule.unit, rule.unlimited, rule.shadow_mode, rule.name, rule.replaces
    )


#: domain -> its config. ``RuleSet`` is immutable once built: a reload swaps the whole set.
RuleSet = Mapping[str, DomainConfig]


class _Parser:
    def __init__(self, source: str, domain: str) -> None:
        self.source = source
        self.domain = domain

    def fail(self, path: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=self.source, field=path)

    def descriptors(self, items: Any, path: str, prefix: str) -> DescriptorNode:
        node = DescriptorNode()
        self.fill(node, items, path, prefix)
        return node

    def fill(self, node: DescriptorNode, items: Any, path: str, prefix: str) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            raise self.fail(path, "must be a list of descriptors")
        for i, item in enumerate(items):
            here = f"{path}[{i}]"
            if not isinstance(item, dict):
                raise self.fail(here, "must be a mapping with at least 'key'")
            unknown = sorted(set(map(str, item)) - _DESCRIPTOR_KEYS)
            if unknown:
                raise self.fail(
                    f"{here}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_DESCRIPTOR_KEYS))})"
                )
            key = item.get("key")
            if not isinstance(key, str) or not key:
                raise self.fail(f"{here}.key", "a non-empty string is required")
            value = item.get("value", "")
            if value is None:
                value = ""
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise self.fail(f"{here}.value", "must be a string")
            value = str(value)
            final = f"{key}_{value}" if value else key
            if final in node.children:
                raise self.fail(here, f"duplicate descriptor composite key '{prefix}{final}'")
            child = DescriptorNode()
            for flag in ("shadow_mode", "detailed_metric"):
                if flag in item and not isinstance(item[flag], bool):
                    raise self.fail(f"{here}.{flag}", "must be true or false")
            child.detailed_metric = bool(item.get("detailed_metric", False))
            full_key = f"{prefix}{final}"
            if "rate_limit" in item and item["rate_limit"] is not None:
                child.limit = self.limit(item["rate_limit"], f"{here}.rate_limit", full_key, item)
            elif item.get("shadow_mode"):
                raise self.fail(f"{here}.shadow_mode", "needs a rate_limit on the same descriptor")
            self.fill(child, item.get("descriptors"), f"{here}.descriptors", full_key + ".")
            node.children[final] = child
            if value.endswith("*"):
                node.wildcards.append((final[:-1], final))

    def limit(self, spec: Any, path: str, full_key: str, item: Mapping[str, Any]) -> RateLimitRule:
        if not isinstance(spec, dict):
            raise self.fail(path, "must be a mapping (unit, requests_per_unit)")
        unknown = sorted(set(map(str, spec)) - _LIMIT_KEYS)
        if unknown:
            raise self.fail(
                f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(_LIMIT_KEYS))})"
            )
        unlimited = spec.get("unlimited", False)
        if not isinstance(unlimited, bool):
            raise self.fail(f"{path}.unlimited", "must be true or false")
        name = spec.get("name", "")
        if not isinstance(name, str):
            raise self.fail(f"{path}.name", "must be a string")
        replaces = spec.get("replaces") or []
        if not isinstance(replaces, list):
            raise self.fail(f"{path}.replaces", "must be a list of {name: ...}")
        names: list[str] = []
        for j, entry in enumerate(replaces):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                raise self.fail(f"{path}.replaces[{j}].name", "a non-empty string is required")
            names.append(entry["name"])
        unit = spec.get("unit")
        rpu = spec.get("requests_per_unit", 0)
        if unlimited:
            if unit is not None:
                raise self.fail(f"{path}.unit", "should not be set when unlimited is true")
            return RateLimitRule(full_key, 0, "second", True, False, name, tuple(names))
        if not isinstance(unit, str) or unit.lower() not in UNIT_SECONDS:
            raise self.fail(
                f"{path}.unit", f"invalid rate limit unit {unit!r} (one of {', '.join(UNIT_SECONDS)})"
            )
        if not isinstance(rpu, int) or isinstance(rpu, bool) or not 0 <= rpu <= 2**32 - 1:
            raise self.fail(f"{path}.requests_per_unit", "must be an integer between 0 and 4294967295")
        shadow = bool(item.get("shadow_mode", False))
        return RateLimitRule(
            self.domain + "." + full_key, rpu, unit.lower(), False, shadow, name, tuple(names)
        )


def parse_config(text: str, source: str) -> DomainConfig:
    """One config file's text; raises ``ConfigError`` naming ``source``, the path and the reason."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", file=source) from None
    if not isinstance(doc, dict):
        raise ConfigError("the document must be a mapping with 'domain' and 'descriptors'", file=source)
    unknown = sorted(set(map(str, doc)) - {"domain", "descriptors"})
    if unknown:
        raise ConfigError("unknown key (allowed: descriptors, domain)", file=source, field=unknown[0])
    domain = doc.get("domain")
    if not isinstance(domain, str) or not domain:
        raise ConfigError("a non-empty string is required", file=source, field="domain")
    parser = _Parser(source, domain)
    root = parser.descriptors(doc.get("descriptors"), "descriptors", "")
    _fix_keys(root, domain)
    return DomainConfig(domain, source, root)


def _fix_keys(node: DescriptorNode, domain: str) -> None:
    """Unlimited rules were built before the domain prefix was known to them: prefix them too."""
    for child in node.children.values():
        if (
            child.limit is not None
            and child.limit.unlimited
            and not child.limit.full_key.startswith(domain + ".")
        ):
            child.limit = _with_key(child.limit, f"{domain}.{child.limit.full_key}")
        _fix_keys(child, domain)


def load_directory(
    directory: Path, files: Iterable[tuple[str, str]] | None = None
) -> dict[str, DomainConfig]:
    """Every ``*.yaml``/``*.yml`` in ``directory`` (sorted); a domain may appear in one file only."""
    if files is None:
        files = read_directory(directory)
    domains: dict[str, DomainConfig] = {}
    for source, text in files:
        config = parse_config(text, source)
        if config.domain in domains:
            raise ConfigError(
                f"duplicate domain '{config.domain}' (also in {domains[config.domain].source})",
                file=source,
                field="domain",
            )
        domains[config.domain] = config
    return domains


def read_directory(directory: Path) -> list[tuple[str, str]]:
    """(path, text) of the config files, sorted by name; dotfiles are ignored."""
    paths = sorted(
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )
    return [(str(p), p.read_text(encoding="utf-8")) for p in paths]
