"""Keeping the App+User consent alive: the rules the daily keep-alive timer runs over the token room.

Entra ID lets a refresh token lapse after 90 days unused, and every App+User call is then refused
(``invalid_grant``) until an admin consents again with MFA: a partner that runs one campaign in spring and the
next in autumn would find the app locked out on the day it needs it. So once a day:

- when the stored refresh token has not been renewed for ``keepalive_days`` (the shared record says when it last
  was, by any instance), it is redeemed once: a new access token, and a rotated refresh token written back as
  every refresh does (Key Vault, or memory in environment mode), whose 90 days start again;
- never two instances at once: the redemption runs under a lease on the shared record (the Functions host also
  runs a timer on one instance at a time; the lease holds for a past-due run overlapping, or a second app on
  the same table);
- the outcome is logged as a ``tokenKeepAlive`` signal with the access token's new expiry and the refresh
  token's lapse date; a refused refresh is an error (consent needed) and so is a token without MFA, which
  Partner Center refuses for App+User calls;
- each Partner Center secret's expiry date in Key Vault is logged as a ``secretExpiry`` signal, for the alert
  that warns before the app secret (or a secret's recorded expiry) runs out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared import signals
from shared.errors import ProductUpgradeError, TokenError
from shared.partner_center.secrets import SecretStore
from shared.partner_center.state import SharedState
from shared.partner_center.tokens import TOKEN_RECORD, TokenProvider, TokenStatus

log = logging.getLogger(__name__)

#: Longest a keep-alive may hold the lease: a refresh takes seconds; a holder that died frees it after this.
LEASE_SECONDS = 300.0

Outcome = Literal["refreshed", "notDue", "busy", "refused", "failed"]

MFA_REQUIRED = (
    "the App+User token carries no MFA claim: Partner Center refuses App+User calls without MFA; "
    "an admin agent must run `product-upgrades consent` again and sign in with MFA"
)


@dataclass(frozen=True)
class KeepAliveResult:
    outcome: Outcome
    status: TokenStatus
    reason: str | None = None


def keep_alive(
    tokens: TokenProvider, state: SharedState, *, keepalive_days: float, now: datetime, holder: str
) -> KeepAliveResult:
    """Renew the App+User token if its refresh token has gone ``keepalive_days`` without renewal; log the outcome.
    Raises nothing: a failure is the outcome ``failed`` (or ``refused``), and tomorrow's run tries again."""
    result = _keep_alive(tokens, state, keepalive_days=keepalive_days, now=now, holder=holder)
    _report(result)
    return result


def _keep_alive(
    tokens: TokenProvider, state: SharedState, *, keepalive_days: float, now: datetime, holder: str
) -> KeepAliveResult:
    status = tokens.status()
    last = status.last_refreshed_at
    if last is not None and not status.consent_needed and now - last < timedelta(days=keepalive_days):
        return KeepAliveResult("notDue", status)
    try:
        if not state.acquire(TOKEN_RECORD, holder, now=now, seconds=LEASE_SECONDS):
            return KeepAliveResult("busy", status, "another instance is renewing the token")
    except ProductUpgradeError as exc:
        # Without the lease two instances could redeem at once: wait for tomorrow (the token has weeks left).
        return KeepAliveResult("failed", status, f"the lease could not be taken: {exc.message}")
    try:
        tokens.refresh()
    except TokenError as exc:
        return KeepAliveResult("refused", tokens.status(), exc.message)
    except ProductUpgradeError as exc:
        return KeepAliveResult("failed", tokens.status(), exc.message)
    finally:
        state.release(TOKEN_RECORD, holder)
    return KeepAliveResult("refreshed", tokens.status())


def _report(result: KeepAliveResult) -> None:
    status = result.status
    level = logging.INFO
    if result.outcome == "refused" or (result.outcome == "refreshed" and status.mfa is False):
        level = logging.ERROR  # alert-grade: the consent must be redone (with MFA)
    elif result.outcome == "failed":
        level = logging.WARNING
    reason = result.reason
    if result.outcome == "refreshed" and status.mfa is False:
        reason = MFA_REQUIRED
    signals.emit(
        signals.TOKEN_KEEPALIVE,
        {
            signals.OUTCOME: result.outcome,
            signals.LAST_REFRESHED_ON: status.last_refreshed_at,
            signals.REFRESH_TOKEN_LAPSES_ON: status.refresh_token_lapses_at,
            signals.TOKEN_EXPIRES_ON: status.access_token_expires_at,
            signals.MFA: status.mfa,
            signals.ERROR_CODE: status.last_error if result.outcome == "refused" else None,
            signals.REASON: reason,
        },
        level=level,
    )


def report_secret_expiries(secrets: SecretStore, *, now: datetime) -> dict[str, int]:
    """Log each Partner Center secret's expiry date as a ``secretExpiry`` signal; the whole days left by name.
    A vault that cannot be listed is a warning, not a failure of the keep-alive."""
    try:
        expiries = secrets.expiries()
    except ProductUpgradeError as exc:
        log.warning("The Partner Center secrets' expiry dates could not be read: %s", exc.message)
        return {}
    days_left: dict[str, int] = {}
    for name, expires_on in sorted(expiries.items()):
        if expires_on is None:
            continue
        days_left[name] = math.floor((expires_on - now).total_seconds() / 86400)
        signals.emit(
            signals.SECRET_EXPIRY,
            {signals.SECRET_NAME: name, signals.SECRET_EXPIRES_ON: expires_on, signals.DAYS_LEFT: days_left[name]},
        )
    return days_left
