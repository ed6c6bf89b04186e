"""Where the command line finds its settings: the environment, else ``local.settings.json``'s ``Values``.

The functions' own local file is read as ``func start`` reads it, so an operator runs the command line in the
project folder with the settings the functions use. A variable set in the environment wins over the file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import MutableMapping
from pathlib import Path

LOCAL_SETTINGS_FILE = "local.settings.json"
#: Files holding settings are readable and writable by their owner only.
PRIVATE_MODE = 0o600


class LocalSettingsError(Exception):
    """``local.settings.json`` exists but cannot be used (the operator must fix it)."""


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a ``local.settings.json``; an absent file gives ``{}``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise LocalSettingsError(f"{path} could not be read ({type(exc).__name__})") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise LocalSettingsError(f"{path} is not valid JSON") from None
    values = document.get("Values") if isinstance(document, dict) else None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise LocalSettingsError(f"{path}: Values must be an object of setting names to strings")
    return {str(name): "" if value is None else str(value) for name, value in values.items()}


def apply_local_settings(folder: Path, environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Copy the file's ``Values`` into ``environ`` (``os.environ``) where a variable is unset or empty.

    Returns the file's path when one was read. ``REQUESTS_CA_BUNDLE`` and the like in ``Values`` take effect
    too, as they do under ``func start``.
    """
    env = os.environ if environ is None else environ
    path = folder / LOCAL_SETTINGS_FILE
    values = read_local_settings(path)
    for name, value in values.items():
        if value and not (env.get(name) or "").strip():
            env[name] = value
    return path if values else None


def write_local_setting(folder: Path, name: str, value: str) -> Path:
    """Set one of ``Values`` in ``local.settings.json`` (created when absent), keeping everything else."""
    path = folder / LOCAL_SETTINGS_FILE
    document: dict[str, object] = {"IsEncrypted": False, "Values": {}}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            raise LocalSettingsError(f"{path} could not be read as JSON; not overwriting it") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("Values", {}), dict):
            raise LocalSettingsError(f"{path} has no Values object; not overwriting it")
        document = loaded
    values = document.setdefault("Values", {})
    assert isinstance(values, dict)
    values[name] = value
    write_private_text(path, json.dumps(document, indent=2) + "\n")
    return path


def write_private_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, readable by its owner only (mode 0600, or narrower when it was).

    For files holding secrets (``local.settings.json``: the app secret, the refresh token). The text goes to a
    temporary file beside it, created exclusively and never through a link (a stale one left by an interrupted
    write, or one planted there, is removed first), then replaces the file in one step.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode) & PRIVATE_MODE  # never wider than it was
    except FileNotFoundError:
        mode = PRIVATE_MODE
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        tmp.unlink()  # a link is removed, not followed
        fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
