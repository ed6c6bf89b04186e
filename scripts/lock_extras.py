"""Check that a hashed lock pins every extra its packages ask for: ``scripts/lock`` runs it after compiling.

Why: pip resolves ``name[extra]`` as a requirement of its own. When a locked package requires
``coverage[toml]`` and the lock says only ``coverage==7.17.5``, pip 23.x (what ``python3.11 -m venv`` ships)
takes the extra's requirement as unpinned, picks the index's newest release and refuses the lock in
``--require-hashes`` mode; a newer pip happens to cope. The lock is only reproducible when the requirement that
names the extra is itself pinned (``coverage[toml]==7.17.5``, ``uv pip compile --no-strip-extras``).

Usage: ``python scripts/lock_extras.py LOCK [LOCK ...]`` with ``packaging`` importable. It asks pip (the
interpreter's own) for each locked file's metadata without resolving (``--dry-run --no-deps --report``), then
lists every ``name[extra]`` a locked package requires, for this machine's markers, that the lock does not pin
with that extra. Exit 1 when there is one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pinned_extras(lock_text: str) -> dict[str, set[str]]:
    """Each locked name with the extras its pin names (an empty set for a plain pin)."""
    pins: dict[str, set[str]] = {}
    for line in re.sub(r"\\\n", " ", lock_text).splitlines():
        spec = line.split("--hash=")[0].split(" #")[0].strip()
        if not spec or spec.startswith(("#", "-")):
            continue
        requirement = Requirement(spec)
        pins.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    return pins


def required_extras(report: dict[str, object], pins: dict[str, set[str]]) -> list[str]:
    """What pip's install report says the locked packages require with extras, and the lock leaves out."""
    problems = []
    for item in report["install"]:  # type: ignore[attr-defined]
        metadata = item["metadata"]
        name = canonicalize_name(metadata["name"])
        for text in metadata.get("requires_dist") or []:
            dependency = Requirement(text)
            # The dependencies that apply to the package as locked: no extra, or the extras its pin names.
            extras = {""} | pins.get(name, set())
            if dependency.marker is not None and not any(dependency.marker.evaluate({"extra": e}) for e in extras):
                continue
            missing = dependency.extras - pins.get(canonicalize_name(dependency.name), set())
            if missing:
                wanted = f"{dependency.name}[{','.join(sorted(dependency.extras))}]"
                problems.append(f"{metadata['name']} requires {wanted}: the lock does not pin {sorted(missing)}")
    return problems


def check(lock: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run",
             "--no-deps", "--ignore-installed", "--require-hashes", "--report", str(report_path), "-r", str(lock)],
            check=True,
        )  # fmt: skip
        report = json.loads(report_path.read_text(encoding="utf-8"))
    return required_extras(report, pinned_extras(lock.read_text(encoding="utf-8")))


def main(paths: list[str]) -> int:
    status = 0
    for path in paths:
        for problem in check(Path(path)):
            print(f"lock: {path}: {problem}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
