"""The package's folders are its architecture: arrows point down the layers, and no folder holds an import circle.

The contracts live in pyproject.toml (``[tool.importlinter]``) and import-linter checks them; these tests run it
on the real package, on a copy with an upward arrow and on a copy with a circle (so the check can fail), and
keep the contract complete: every module of ``shared/`` belongs to one layer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(folder / "pyproject.toml")],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
    )


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["importlinter"]["contracts"])


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_no_arrow_points_up_and_no_folder_holds_a_circle() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_every_module_of_the_package_belongs_to_a_layer() -> None:
    [layers] = [contract for contract in contracts() if contract["type"] == "layers"]
    named = {
        name.strip()
        for layer in layers["layers"]  # type: ignore[attr-defined]
        for name in str(layer).replace("|", ":").split(":")
    }
    present = {
        f"shared.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "shared").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    assert present == named


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # A basic reaching up to an adapter.
        ("settings.py", "from shared.functions import http_api", "adapters -> rules -> outside services -> basics"),
        # The store and Partner Center are siblings that never import each other.
        ("store/ledger.py", "from shared.partner_center import client", "adapters -> rules -> outside services"),
        # A circle inside one folder.
        ("cli/campaign.py", "from shared.cli import bulk", "no import circle"),
    ],
)
def test_the_check_fails_on_an_upward_arrow_or_a_circle(tmp_path: Path, module: str, line: str, broken: str) -> None:
    folder = copy_of_the_package(tmp_path)
    path = folder / "shared" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = lint_imports(folder)
    assert result.returncode == 1
    assert f"{broken}" in result.stdout.split("Broken contracts")[1]
