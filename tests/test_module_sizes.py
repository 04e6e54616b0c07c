"""Library code stays readable: no module over 400 lines, no function over 60 (docs/architecture.md, rule 6)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("pipeline", "flows", "models", "storage")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _files() -> list[Path]:
    return sorted(p for pkg in LIBRARY for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_400_lines():
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in _files()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, "split these modules:\n" + "\n".join(long)


def test_no_function_over_60_lines():
    long = []
    for p in _files():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "split these functions into named steps:\n" + "\n".join(long)
