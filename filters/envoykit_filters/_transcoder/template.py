"""``google.api.http`` path templates: parse once into a regex, match per request.

Grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["PathTemplate", "TemplateError"]

_LITERAL = re.compile(r"[A-Za-z0-9._~\-%!$&'()+,;=@]+")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class _Var:
    field_path: tuple[str, ...]
    multi: bool  # spans several segments: "/" in the value stays encoded as given


class PathTemplate:
    """One compiled template. ``match(path)`` gives ``{field path: value}`` or None."""

    def __init__(self, template: str) -> None:
        self.template = template
        if not template.startswith("/"):
            raise TemplateError(f"{template!r}: a path template starts with '/'")
        body, verb = template[1:], ""
        # The verb is a ':' after the last '/', outside braces.
        depth, cut = 0, -1
        for i, ch in enumerate(body):
            depth += ch == "{"
            depth -= ch == "}"
            if ch == ":" and depth == 0 and "/" not in body[i:]:
                cut = i
        if cut >= 0:
            body, verb = body[:cut], body[cut + 1 :]
            if not _LITERAL.fullmatch(verb):
                raise TemplateError(f"{template!r}: bad verb {verb!r}")
        self.vars: list[_Var] = []
        self.literals = 0
        pattern = self._segments(body, top=True)
        if verb:
            pattern += ":" + re.escape(verb)
        self._regex = re.compile(f"^/{pattern}$")

    def _segments(self, text: str, *, top: bool) -> str:
        parts: list[str] = []
        i = 0
        while i < len(text):
            if text[i] == "{":
                if not top:
                    raise TemplateError(f"{self.template!r}: nested variables")
                end = text.find("}", i)
                if end < 0:
                    raise TemplateError(f"{self.template!r}: unclosed '{{'")
                inner = text[i + 1 : end]
                name, eq, sub = inner.partition("=")
                if not _FIELD.fullmatch(name):
                    raise TemplateError(f"{self.template!r}: bad variable name {name!r}")
                sub_pattern = self._segments(sub, top=False) if eq else "[^/]+"
                multi = eq and ("**" in sub or "/" in sub)
                self.vars.append(_Var(tuple(name.split(".")), bool(multi)))
                parts.append(f"(?P<v{len(self.vars) - 1}>{sub_pattern})")
                i = end + 1
            else:
                end = text.find("/", i)
                seg = text[i:] if end < 0 else text[i:end]
                if "{" in seg:
                    raise TemplateError(f"{self.template!r}: a variable must be a whole segment")
                i = len(text) if end < 0 else end + 1
                if end >= 0 and i == len(text):
                    raise TemplateError(f"{self.template!r}: empty segment")
                if seg == "*":
                    parts.append("[^/]+")
                elif seg == "**":
                    parts.append(".*")
                elif seg and _LITERAL.fullmatch(seg):
                    parts.append(re.escape(seg))
                    self.literals += 1
                else:
                    raise TemplateError(f"{self.template!r}: bad segment {seg!r}")
                continue
            if i < len(text):
                if text[i] != "/":
                    raise TemplateError(f"{self.template!r}: a variable must be a whole segment")
                i += 1
        return "/".join(parts)

    def match(self, path: str) -> dict[tuple[str, ...], str] | None:
        m = self._regex.match(path)
        if m is None:
            return None
        values: dict[tuple[str, ...], str] = {}
        for index, var in enumerate(self.vars):
            raw = m.group(f"v{index}")
            if var.multi:
                # Reserved expansion: keep %2F encoded so segments stay distinguishable.
                values[var.field_path] = "%2F".join(unquote(p) for p in re.split("%2[fF]", raw))
            else:
                values[var.field_path] = unquote(raw)
        return values
