"""Map a location in a parsed YAML document (``("chains", "api", 0, "config")``) to its line.

Error messages that say *where* a bad value is save users from hunting through long gateway
files; pydantic gives the location, the YAML node tree gives the line.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

__all__ = ["line_finder"]


def line_finder(text: str) -> Callable[[tuple[int | str, ...]], int | None]:
    """A function from a location to a 1-based line number (deepest node found)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None

    def line_of(loc: tuple[int | str, ...]) -> int | None:
        node = root
        line = None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line = key.start_mark.line + 1
                        node = value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line if node is None else node.start_mark.line + 1

    return line_of
