"""The README stays true: its test command is what CI runs, and it documents every setting the code reads."""

import json
import re
from pathlib import Path

from shared.settings import ALL_SETTINGS, DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^scripts/check$", README, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/check$", ci, re.MULTILINE)


def test_every_setting_is_in_the_readme_table_with_its_default():
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    for name in ALL_SETTINGS:
        [row] = [r for r in rows if f"`{name}`" in r.split("|")[1]]
        if name in DEFAULTS:
            assert f"`{DEFAULTS[name]}`" in row, name


def test_sample_settings_list_every_setting_with_the_defaults():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in ALL_SETTINGS:
        assert name in values, name
        if name in DEFAULTS:
            assert values[name] == DEFAULTS[name], name
