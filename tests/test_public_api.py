"""The public face: one sorted __all__, every name importable, and a fast, light import."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

import chatlane


def test_all_is_sorted_and_importable() -> None:
    assert chatlane.__all__ == sorted(chatlane.__all__)
    for name in chatlane.__all__:
        assert getattr(chatlane, name) is not None


def test_every_public_name_of_the_type_modules_is_exported() -> None:
    missing = []
    for module_name in ("errors", "messages", "tools", "request", "response", "events"):
        module = importlib.import_module(f"chatlane.{module_name}")
        for name in getattr(module, "__all__", []):
            if name not in chatlane.__all__ and not name.startswith("_"):
                missing.append(f"{module_name}.{name}")
    # Type aliases stay in their modules.
    assert set(missing) <= {
        "messages.Content",
        "messages.Part",
        "request.ToolChoice",
        "tools.BUILTIN_TOOLS",
    }


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        chatlane.NoSuchThing  # noqa: B018


def test_import_chatlane_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, json, chatlane; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'pydantic', 'tiktoken', 'llama_cpp', 'rich', 'jinja2', 'anyio'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_every_module_imports() -> None:
    for info in pkgutil.walk_packages(chatlane.__path__, "chatlane."):
        if info.name in ("chatlane.__main__",):
            continue
        importlib.import_module(info.name)


def test_type_checkers_see_every_export_as_reexported() -> None:
    # mypy --strict treats `from m import X` in a package as private unless written `X as X`;
    # users writing `from chatlane import user` under --strict rely on this block.
    import ast
    from pathlib import Path

    source = Path(chatlane.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    reexported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    for alias in stmt.names:
                        if alias.asname == alias.name:
                            reexported[alias.name] = stmt.module
    assert reexported == chatlane._EXPORTS
