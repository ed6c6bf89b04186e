"""House rules of the code outside the tests (issue #19): no function or method over 60 lines.

A function that long does several jobs; cut it along its seams instead. The length is the one ``ast`` gives,
from the ``def`` line (decorators excluded) to the function's last line. The check is a pure function of a
file's source, run on every file of the project and, so it is known to fail, on a function one line too long.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
#: Folders not walked: the tests, the virtualenv, the Node packages, build output (hidden ones never are).
SKIPPED = {"tests", ".venv", "node_modules", "build"}


def long_functions(source: str, name: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``name:line qualified.name (N lines)`` for each function or method of ``source`` over ``limit`` lines."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = prefix + child.name
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and lines > limit:
                    found.append(f"{name}:{child.lineno} {qualified} ({lines} lines)")
                visit(child, qualified + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=name), "")
    return found


def project_sources() -> list[Path]:
    """Every .py file of the project outside the skipped folders and the hidden ones."""
    paths: list[Path] = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (d in SKIPPED and Path(folder) == ROOT))
        paths += [Path(folder) / f for f in sorted(files) if f.endswith(".py")]
    return paths


def test_no_function_outside_the_tests_is_over_60_lines():
    sources = project_sources()
    assert ROOT / "function_app.py" in sources and ROOT / "shared" / "upgrades" / "runtime.py" in sources
    assert not any("tests" in path.relative_to(ROOT).parts[:1] for path in sources)
    offenders = [
        offender
        for path in sources
        for offender in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert not offenders, f"over {MAX_FUNCTION_LINES} lines, cut along the seams:\n" + "\n".join(offenders)


def test_the_check_reports_a_function_one_line_too_long():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    source = (
        "def fits():\n" + body + "\n"  # the def line and 59 more: 60 lines
        "class Holder:\n"
        "    @staticmethod\n"
        "    async def too_long():\n" + body.replace("    ", "        ") + "        return None\n"
    )
    assert long_functions(source, "synthetic.py") == ["synthetic.py:64 Holder.too_long (61 lines)"]
