"""Istio's string patterns: exact, ``prefix*``, ``*suffix``, and ``*`` (present, any value)."""

from __future__ import annotations

__all__ = ["StringPattern", "any_matches"]


class StringPattern:
    __slots__ = ("kind", "text")

    def __init__(self, pattern: str, *, lower: bool = False) -> None:
        text = pattern.lower() if lower else pattern
        if text == "*":
            self.kind, self.text = "any", ""
        elif text.endswith("*"):
            self.kind, self.text = "prefix", text[:-1]
        elif text.startswith("*"):
            self.kind, self.text = "suffix", text[1:]
        else:
            self.kind, self.text = "exact", text

    def matches(self, value: str) -> bool:
        if self.kind == "exact":
            return value == self.text
        if self.kind == "prefix":
            return value.startswith(self.text)
        if self.kind == "suffix":
            return value.endswith(self.text)
        return True


def any_matches(patterns: tuple[StringPattern, ...], value: str | None) -> bool:
    return value is not None and any(p.matches(value) for p in patterns)
