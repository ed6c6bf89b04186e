"""The keep-alive timer's adapter: once a day, keep the App+User consent from lapsing (rules in
:mod:`shared.partner_center.keepalive`) and report the Partner Center secrets' expiry dates."""

from __future__ import annotations

import logging
import uuid

import azure.functions as func

from shared import logs
from shared.errors import SettingError
from shared.partner_center.state import NoSharedState
from shared.retry import time_budget
from shared.settings import instance_name
from shared.upgrades.runtime import get_runtime

log = logging.getLogger(__name__)

#: When the timer fires (NCRONTAB, with seconds, UTC): daily at 03:17, off the hour other jobs crowd.
SCHEDULE = "0 17 3 * * *"
#: One run gives up within this many seconds, well inside host.json's functionTimeout (5 min).
KEEPALIVE_TIME_BUDGET_SECONDS = 120.0


def handle(timer: func.TimerRequest) -> None:
    """Renew the token when due, then report the secrets' expiry; a missing setting is logged, never raised."""
    # The rules import msal and requests: loaded on the first run, not when the functions are indexed.
    from shared.partner_center.keepalive import keep_alive, report_secret_expiries

    with logs.operation(), time_budget(KEEPALIVE_TIME_BUDGET_SECONDS):
        try:
            runtime = get_runtime()
        except SettingError as exc:
            log.error("The token keep-alive cannot run: %s", exc.message)
            return
        now = runtime.clock()
        keep_alive(
            runtime.tokens,
            runtime.shared_state or NoSharedState(),
            keepalive_days=runtime.settings.token_keepalive_days,
            now=now,
            holder=_holder(),
        )
        report_secret_expiries(runtime.secrets, now=now)
        if timer.past_due:
            log.info("The token keep-alive ran late (the timer was past due)")


def _holder() -> str:
    """Who holds the lease: this instance and run (names only, for an operator reading the table)."""
    instance = instance_name()
    return f"{instance[:64]}/{uuid.uuid4().hex[:8]}"
