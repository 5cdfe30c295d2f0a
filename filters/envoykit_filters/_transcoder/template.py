"""``google.api.http`` path templates: parse once into a regex, match per request.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Request paths are split as the native transcoder does (``split_path``): a ``:verb`` after the
last ``/`` is a verb only when some template uses it, and trailing empty segments are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["PathTemplate", "TemplateError", "split_path"]

_LITERAL = re.compile(r"[A-Za-z0-9._~\-%!$&'()+,;=@]+")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_ENCODED_SLASH = re.compile("%2[fF]")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class _Var:
    field_path: tuple[str, ...]
    multi: bool  # spans several segments: an encoded "/" in the value stays encoded


def split_path(path: str, verbs: Collection[str]) -> tuple[str, str]:
    """``(path without verb and trailing slashes, verb)``."""
    colon, slash = path.rfind(":"), path.rfind("/")
    verb = ""
    if colon > slash and path[colon + 1 :] in verbs:
        path, verb = path[:colon], path[colon + 1 :]
    stripped = path.rstrip("/")
    return (stripped or "/"), verb


class PathTemplate:
    """One compiled template. ``match(path, verb)`` gives ``{field path: value}`` or None."""

    def __init__(self, template: str) -> None:
        self.template = template
        if not template.startswith("/"):
            raise TemplateError(f"{template!r}: a path template starts with '/'")
        body, self.verb = template[1:], ""
        # The verb is a ':' after the last '/', outside braces.
        depth, cut = 0, -1
        for i, ch in enumerate(body):
            depth += ch == "{"
            depth -= ch == "}"
            if ch == ":" and depth == 0 and "/" not in body[i:]:
                cut = i
        if cut >= 0:
            body, self.verb = body[:cut], body[cut + 1 :]
            if not _LITERAL.fullmatch(self.verb):
                raise TemplateError(f"{template!r}: bad verb {self.verb!r}")
        self.vars: list[_Var] = []
        self.literals = 0
        self._regex = re.compile(f"^{self._segments(body, top=True)}$")

    def _segments(self, text: str, *, top: bool) -> str:
        """The regex of ``text``'s segments, each with its leading '/' (the first one without,
        when nested in a variable); a trailing ``**`` also matches no segment at all
        (``/v1/files`` for ``/v1/files/**``)."""
        if not text:
            raise TemplateError(f"{self.template!r}: empty segments")
        segments = _split_segments(text, self.template)
        out = ""
        for index, seg in enumerate(segments):
            double = seg == "**"
            if seg.startswith("{"):
                if not top:
                    raise TemplateError(f"{self.template!r}: nested variables")
                name, eq, sub = seg[1:-1].partition("=")
                if not _FIELD.fullmatch(name):
                    raise TemplateError(f"{self.template!r}: bad variable name {name!r}")
                inner = self._segments(sub, top=False) if eq else "[^/]*"
                self.vars.append(_Var(tuple(name.split(".")), bool(eq) and ("**" in sub or "/" in sub)))
                pattern = f"(?P<v{len(self.vars) - 1}>{inner})"
                double = sub == "**"
            elif seg == "*":
                pattern = "[^/]*"
            elif double:
                pattern = ".*"
            elif _LITERAL.fullmatch(seg):
                pattern = re.escape(seg)
                self.literals += 1
            else:
                raise TemplateError(f"{self.template!r}: bad segment {seg!r}")
            if index == 0 and not top:
                out += pattern
            elif double and index == len(segments) - 1:
                out += f"(?:/{pattern})?"
            else:
                out += "/" + pattern
        return out

    def match(self, path: str, verb: str = "") -> dict[tuple[str, ...], str] | None:
        if verb != self.verb:
            return None
        m = self._regex.match(path)
        if m is None:
            return None
        values: dict[tuple[str, ...], str] = {}
        for index, var in enumerate(self.vars):
            raw = m.group(f"v{index}") or ""
            if var.multi:
                values[var.field_path] = "%2F".join(unquote(p) for p in _ENCODED_SLASH.split(raw))
            else:
                values[var.field_path] = unquote(raw)
        return values


def _split_segments(text: str, template: str) -> list[str]:
    """``a/{b=c/*}/d`` -> ``["a", "{b=c/*}", "d"]`` (slashes inside braces stay)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"{template!r}: unbalanced '}}'")
        elif ch == "/" and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth:
        raise TemplateError(f"{template!r}: unclosed '{{'")
    out.append(text[start:])
    for seg in out:
        if not seg:
            raise TemplateError(f"{template!r}: empty segment")
        if "{" in seg and not (seg.startswith("{") and seg.endswith("}")):
            raise TemplateError(f"{template!r}: a variable must be a whole segment")
    return out
