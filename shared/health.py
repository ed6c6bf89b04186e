"""Operator visibility: which settings are present (names only) and whether a token can be acquired.

The answer is cached briefly, so an anonymous caller cannot use the endpoint to hammer Entra ID.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.errors import ProductUpgradeError, SettingError
from shared.retry import time_budget
from shared.runtime import get_runtime
from shared.settings import (
    ALL_SETTINGS,
    DEFAULTS,
    KEY_VAULT_URL_SETTING,
    SECRET_SETTINGS,
    STORAGE_ACCOUNT_NAME_SETTING,
    STORAGE_SETTING,
    TENANT_ID_SETTING,
    Settings,
)

log = logging.getLogger(__name__)

#: Seconds one health answer is reused.
CACHE_SECONDS = 60.0
#: A probe wants an answer soon: the token check gives up after this many seconds.
TOKEN_CHECK_SECONDS = 15.0

_lock = threading.Lock()
_cached: tuple[float, int, dict[str, Any]] | None = None


def check_health(environ: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, body)``: 200 when settings are complete and a token was acquired, else 503."""
    global _cached
    with _lock:
        now = time.monotonic()
        if _cached is not None and now - _cached[0] < CACHE_SECONDS:
            return _cached[1], _cached[2]
        status, body = _check(os.environ if environ is None else environ)
        _cached = (now, status, body)
        return status, body


def clear_cache() -> None:
    global _cached
    with _lock:
        _cached = None


def _check(env: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    present = [name for name in ALL_SETTINGS if (env.get(name) or "").strip()]
    required = [TENANT_ID_SETTING]
    if not (env.get(KEY_VAULT_URL_SETTING) or "").strip():
        required += sorted(SECRET_SETTINGS)
    missing = [name for name in required if name not in present]
    if not (env.get(STORAGE_SETTING) or env.get(STORAGE_ACCOUNT_NAME_SETTING)):
        missing.append(STORAGE_SETTING)
    settings_error: str | None = None
    try:
        Settings.from_env(env)
    except SettingError as exc:
        settings_error = exc.message
    token: dict[str, Any] = {"acquired": False, "error": None}
    if settings_error is None:
        try:
            with time_budget(TOKEN_CHECK_SECONDS):
                get_runtime().tokens.get_token()
            token["acquired"] = True
        except ProductUpgradeError as exc:
            # The endpoint is anonymous: the kind of failure only; the full reason goes to the log.
            log.warning("Health check could not acquire a token: %s", exc.message)
            token["error"] = exc.code
    else:
        token["error"] = "not_attempted"
    healthy = not missing and settings_error is None and token["acquired"]
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checkedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "present": present,
            "defaulted": [name for name in DEFAULTS if name not in present],
            "missing": missing,
            "error": settings_error,
        },
        "token": token,
    }
    return (200 if healthy else 503), body
