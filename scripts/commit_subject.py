"""Check a commit message's subject: one line of at most 72 characters, then a blank line before the body.

Why: ``git log --oneline`` and every tool that lists commits show the subject alone; the why belongs in the body.
pre-commit runs this at the ``commit-msg`` stage (``.pre-commit-config.yaml``; ``pre-commit install`` installs
that hook too). Usage: ``python scripts/commit_subject.py MESSAGE_FILE``; exit 1 with the reason when it fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_SUBJECT = 72


def problems(message: str) -> list[str]:
    """What is wrong with the message's subject (none: it is fine). Lines git strips (``#``) are ignored."""
    lines = [line for line in message.splitlines() if not line.startswith("#")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return ["the message is empty"]
    found = []
    subject = lines[0].rstrip()
    if len(subject) > MAX_SUBJECT:
        found.append(f"the subject is {len(subject)} characters, at most {MAX_SUBJECT}: put the why in the body")
    if subject.endswith("."):
        found.append("the subject ends with a full stop")
    if len(lines) > 1 and lines[1].strip():
        found.append("a blank line must follow the subject")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} MESSAGE_FILE", file=sys.stderr)
        return 2
    found = problems(Path(argv[1]).read_text(encoding="utf-8"))
    for problem in found:
        print(f"commit message: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
