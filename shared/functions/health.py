"""Operator visibility: which settings are present (names only), whether a token can be acquired, and the
App+User consent's state: when the token was last renewed, when the refresh token lapses, whether it carries MFA
and whether an admin must consent again (dates and flags only, never a token).

Anonymous callers get ``healthy``/``unhealthy`` only; the detailed view (setting names, the token check's
kind of failure) is for holders of a function key. Both read one cached answer, refreshed by one caller at
a time without holding a lock across the network call: a slow token endpoint never queues callers up,
and an anonymous caller cannot use the endpoint to hammer Entra ID.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.errors import ProductUpgradeError, SettingError, TokenError
from shared.retry import time_budget
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
from shared.upgrades.runtime import get_runtime

log = logging.getLogger(__name__)

#: Seconds one health answer is reused.
CACHE_SECONDS = 60.0
#: A probe wants an answer soon: the token check gives up after this many seconds.
TOKEN_CHECK_SECONDS = 15.0

#: What callers get while the very first check is still under way.
_FIRST_CHECK_PENDING: dict[str, Any] = {"status": "unhealthy", "checkedAt": None, "pending": True}

_lock = threading.Lock()
_cached: tuple[float, int, dict[str, Any]] | None = None
_refreshing = False


def check_health(environ: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """``(status, body)``: 200 when settings are complete and a token was acquired, else 503.

    A fresh answer (younger than :data:`CACHE_SECONDS`) is given as it is. A stale one is refreshed by this
    caller unless another is already at it: then the last answer comes back at once (``unhealthy`` while
    the very first check is still under way).
    """
    global _cached, _refreshing
    with _lock:
        cached = _cached
        if (cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS) or _refreshing:
            return (cached[1], cached[2]) if cached is not None else (503, dict(_FIRST_CHECK_PENDING))
        _refreshing = True
    try:
        status, body = _check(os.environ if environ is None else environ)
        with _lock:
            _cached = (time.monotonic(), status, body)
        return status, body
    finally:
        with _lock:
            _refreshing = False


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
    consent: dict[str, Any] | None = None
    if settings_error is None:
        refused: str | None = None
        try:
            with time_budget(TOKEN_CHECK_SECONDS):
                get_runtime().tokens.get_token()
            token["acquired"] = True
        except ProductUpgradeError as exc:
            # The endpoint is anonymous: the kind of failure only; the full reason goes to the log.
            log.warning("Health check could not acquire a token: %s", exc.message)
            token["error"] = exc.code
            refused = exc.error if isinstance(exc, TokenError) else None
        consent = _consent(refused)
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
        "consent": consent,
    }
    return (200 if healthy else 503), body


def _consent(refused: str | None) -> dict[str, Any]:
    """The App+User consent as every instance recorded it (this process's own view without storage); this
    check's own refusal counts at once."""
    with time_budget(TOKEN_CHECK_SECONDS):
        status = get_runtime().tokens.status().to_json()
    if refused is not None:
        status["consentNeeded"] = refused == "invalid_grant"
        status["lastError"] = refused
    return status
