"""The freezer: host-compiled bytecode into a deterministic C table (no toolchain needed)."""

from __future__ import annotations

import importlib.util
import marshal
import re
from pathlib import Path

import pytest

from envoykit.wasm import (
    ENTRY_MODULE,
    STARTUP_MODULES,
    WasmBuildError,
    collect_modules,
    compile_module,
    render_c,
)
from envoykit.wasm._freeze import check_magic, stdlib_imports, stdlib_source


def fake_stdlib(root: Path) -> Path:
    """A tiny stdlib tree: the start-up codecs plus a package with a submodule."""
    files = {
        "encodings/__init__.py": "from . import aliases\n",
        "encodings/aliases.py": "aliases = {}\n",
        "encodings/ascii.py": "",
        "encodings/latin_1.py": "",
        "encodings/utf_8.py": "",
        "json/__init__.py": "from .decoder import JSONDecoder\n",
        "json/decoder.py": "class JSONDecoder: ...\n",
        "unused.py": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_compiled_module_round_trips() -> None:
    mod = compile_module("m", b"X = 6 * 7\n", "<frozen m>")
    ns: dict[str, object] = {}
    exec(marshal.loads(mod.code), ns)
    assert ns["X"] == 42 and not mod.is_package


def test_syntax_error_names_the_file() -> None:
    with pytest.raises(WasmBuildError, match=r"broken\.py"):
        compile_module("m", b"def (:\n", "broken.py")


def test_magic_check() -> None:
    check_magic(importlib.util.MAGIC_NUMBER)
    with pytest.raises(WasmBuildError, match="bytecode magic"):
        check_magic(b"\x00\x00\r\n")


def test_stdlib_source_finds_packages_and_modules(tmp_path: Path) -> None:
    std = fake_stdlib(tmp_path)
    assert stdlib_source(std, "json") == (std / "json" / "__init__.py", True)
    assert stdlib_source(std, "json.decoder") == (std / "json" / "decoder.py", False)
    with pytest.raises(WasmBuildError, match="not found"):
        stdlib_source(std, "_socket")


def test_collect_modules_follows_imports(tmp_path: Path) -> None:
    std = fake_stdlib(tmp_path / "std")
    entry = tmp_path / "entry.py"
    entry.write_text("import json\nimport _envoykit_host\n")
    assert stdlib_imports(std, entry) == ["json", "json.decoder"]
    names = [m.name for m in collect_modules(std, entry)]
    assert names == sorted(names)
    assert set(names) == {*STARTUP_MODULES, "json", "json.decoder", ENTRY_MODULE}
    assert "unused" not in names
    with_extra = [m.name for m in collect_modules(std, entry, extra_stdlib=["unused"])]
    assert "unused" in with_extra


def test_user_modules_and_packages(tmp_path: Path) -> None:
    std = fake_stdlib(tmp_path / "std")
    entry = tmp_path / "entry.py"
    entry.write_text("")
    pkg = tmp_path / "mypkg" / "__init__.py"
    pkg.parent.mkdir()
    pkg.write_text("")
    mods = {m.name: m for m in collect_modules(std, entry, user={"mypkg": pkg})}
    assert mods["mypkg"].is_package
    assert mods["encodings"].is_package and not mods[ENTRY_MODULE].is_package


def test_render_c_is_deterministic_and_complete(tmp_path: Path) -> None:
    std = fake_stdlib(tmp_path / "std")
    entry = tmp_path / "entry.py"
    entry.write_text("import json\n")
    mods = collect_modules(std, entry)
    c = render_c(mods)
    assert c == render_c(reversed(mods))
    rows = re.findall(r'\{"([\w.]+)", M(\d+), \(int\)sizeof\(M\d+\), ([01]), NULL\}', c)
    assert [r[0] for r in rows] == [m.name for m in mods]
    assert c.rstrip().endswith("{NULL, NULL, 0, 0, NULL},\n};")
    first = re.search(r"M0\[\] = \{\n(.*?)\n\};", c, re.S)
    assert first is not None
    data = bytes(int(b) for b in first.group(1).replace("\n", "").split(",") if b.strip())
    assert data == mods[0].code


def test_duplicate_names_are_rejected() -> None:
    mod = compile_module("m", b"", "m")
    with pytest.raises(WasmBuildError, match="duplicate"):
        render_c([mod, mod])


def test_user_modules_pull_their_stdlib_imports(tmp_path: Path) -> None:
    std = fake_stdlib(tmp_path / "std")
    entry = tmp_path / "entry.py"
    entry.write_text("import helper\n")
    helper = tmp_path / "helper.py"
    helper.write_text("import json\n")
    names = {m.name for m in collect_modules(std, entry, user={"helper": helper})}
    assert {"helper", "json", "json.decoder"} <= names
