"""The README's filter and harness snippets, executed (docs that cannot rot)."""

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_filter_and_harness_example_run():
    blocks = python_blocks()
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md[filter]", "exec"), namespace)  # the ApiKey filter
    exec(compile(blocks[1], "README.md[harness]", "exec"), namespace)  # its asserts
