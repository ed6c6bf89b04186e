"""Files holding settings (secrets among them) are written readable by their owner only, whoever writes them.

``consent`` and ``scripts/run`` both write ``local.settings.json``: created with mode 0600, never made wider
than it was, and through a temporary file opened exclusively (a stale one, or a link planted in its place,
is never written through).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sandbox.cli import write_json
from shared.cli.environment import LOCAL_SETTINGS_FILE, write_local_setting


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def write_with_consent(folder: Path) -> Path:
    return write_local_setting(folder / LOCAL_SETTINGS_FILE, "PARTNER_CENTER_REFRESH_TOKEN", "rt-secret")


def write_with_scripts_run(folder: Path) -> Path:
    path = folder / LOCAL_SETTINGS_FILE
    write_json(path, {"IsEncrypted": False, "Values": {"PARTNER_CENTER_REFRESH_TOKEN": "rt-secret"}})
    return path


WRITERS = [write_with_consent, write_with_scripts_run]


@pytest.fixture(autouse=True)
def usual_umask():
    previous = os.umask(0o022)  # what most shells have: files the umask chooses are world-readable
    yield
    os.umask(previous)


@pytest.mark.parametrize("write", WRITERS)
def test_a_new_settings_file_is_readable_by_its_owner_only(tmp_path: Path, write) -> None:
    path = write(tmp_path)
    assert mode(path) == 0o600
    assert json.loads(path.read_text())["Values"]["PARTNER_CENTER_REFRESH_TOKEN"] == "rt-secret"


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize(("before", "after"), [(0o644, 0o600), (0o600, 0o600), (0o400, 0o400)])
def test_rewriting_a_settings_file_never_widens_its_mode(tmp_path: Path, write, before: int, after: int) -> None:
    path = tmp_path / LOCAL_SETTINGS_FILE
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"Other": "kept"}}))
    path.chmod(before)
    write(tmp_path)
    assert mode(path) == after


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize("temp_name", [".local.settings.json.tmp", "local.settings.json.tmp"])
def test_a_stale_temporary_file_is_neither_reused_nor_written_through(tmp_path: Path, write, temp_name: str) -> None:
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("not yours")
    stale = tmp_path / temp_name
    stale.symlink_to(victim)  # planted, or left by an interrupted run: the write must not follow it

    path = write(tmp_path)

    assert victim.read_text() == "not yours"
    assert mode(path) == 0o600 and not path.is_symlink()
    assert json.loads(path.read_text())["Values"]["PARTNER_CENTER_REFRESH_TOKEN"] == "rt-secret"
