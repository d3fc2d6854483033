"""The README stays true: the tests it cites exist, and its configuration table lists every
setting with its default."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from chatstream.settings import Settings

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_cited_test_exists() -> None:
    missing = []
    for path, name in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?", README):
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name:
            tree = ast.parse(file.read_text())
            defined = {
                node.name
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            if name not in defined:
                missing.append(f"{path}::{name}")
    assert missing == []


def test_the_configuration_table_lists_every_setting() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    undocumented = []
    for spec in fields(Settings):
        row = next((r for r in rows if f"`{spec.metadata['env']}`" in r.split(" | ")[0]), None)
        default = spec.default
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        if row is None or (default is not None and f"`{shown}`" not in row):
            undocumented.append(f"{spec.metadata['env']} (default {shown})")
    assert undocumented == []
