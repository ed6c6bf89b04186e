"""Where the command line finds its settings: the environment, then one ``local.settings.json``'s ``Values``.

The file is the project's own (the checkout holding this package, beside ``host.json``: the one ``func start``
reads) or the one named with ``--settings PATH``; never a ``local.settings.json`` that merely sits in the folder
the command runs in. A campaign folder someone sends (a CSV and a ``local.settings.json``) must not choose where
the app secret and refresh token are sent (``PARTNER_CENTER_AUTHORITY_HOST``, ``PARTNER_CENTER_BASE_URL``), which
CA is trusted (``REQUESTS_CA_BUNDLE``) or which vault is read (``KEY_VAULT_URL``). A variable set in the
environment wins over the file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_SETTINGS_FILE = "local.settings.json"
#: Files holding settings are readable and writable by their owner only.
PRIVATE_MODE = 0o600
#: What marks the folder of a Functions project (the checkout holding this package).
PROJECT_MARKER = "host.json"


class LocalSettingsError(Exception):
    """``local.settings.json`` exists but cannot be used (the operator must fix it)."""


@dataclass(frozen=True)
class SettingsSources:
    """Where this run's settings came from: the environment, and at most one ``local.settings.json``."""

    #: The file whose ``Values`` were read; None when none was.
    file: Path | None
    #: The file looked for (the project's own, or ``--settings``), read or not.
    looked_for: Path | None = None
    #: Named with ``--settings``.
    explicit: bool = False
    #: A ``local.settings.json`` in the working folder that was left unread.
    ignored: Path | None = None

    def describe(self) -> str:
        """The sources read, for messages: "the environment and /p/local.settings.json"."""
        if self.file is not None:
            return f"the environment and {self.file}"
        if self.looked_for is not None:
            return f"the environment only ({self.looked_for} does not exist)"
        return "the environment only (no project checkout holds this package, so no local.settings.json)"

    def help(self) -> str:
        """What a message about a missing or malformed setting adds: the sources and how to point at a file."""
        return f"settings read from {self.describe()}; set it there, or name a settings file with --settings PATH"


def project_folder() -> Path | None:
    """The checkout holding this package (``shared/cli/`` is two folders down), when it is a Functions project;
    None when the package is installed elsewhere (site-packages)."""
    folder = Path(__file__).absolute().parents[2]  # absolute, not resolved: a linked copy keeps its own file
    return folder if (folder / PROJECT_MARKER).is_file() else None


def load_settings(
    working_folder: Path,
    *,
    explicit: Path | None = None,
    project: Path | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> SettingsSources:
    """Apply one ``local.settings.json``: ``explicit`` (``--settings``; it must exist), else the project's own.

    Its ``Values`` are copied into ``environ`` (``os.environ``) where a variable is unset or empty, so
    ``REQUESTS_CA_BUNDLE`` and the like take effect too, as under ``func start``.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        path: Path | None = explicit
        if not explicit.is_file():
            raise LocalSettingsError(f"--settings {explicit}: no such file")
    else:
        path = project / LOCAL_SETTINGS_FILE if project is not None else None
    values = read_local_settings(path) if path is not None else {}
    for name, value in values.items():
        if value and not (env.get(name) or "").strip():
            env[name] = value
    read = path if path is not None and path.is_file() else None
    here = working_folder / LOCAL_SETTINGS_FILE
    ignored = here if here.is_file() and (read is None or not _same_file(here, read)) else None
    return SettingsSources(read, path, explicit is not None, ignored)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


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


def write_local_setting(path: Path, name: str, value: str) -> Path:
    """Set one of ``Values`` in the ``local.settings.json`` at ``path`` (created when absent), keeping the rest."""
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
