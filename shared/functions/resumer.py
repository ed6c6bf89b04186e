"""The timer's adapter: every 15 minutes, tracking that has stopped is resumed.

A chain of status checks can break where no single invocation can mend it: the first check of an accepted
upgrade not scheduled because storage refused the write, a tracking message sent to the poison queue after a
storage outage outlasted the host's retries, a worker gone between two steps. The ledger still says the
upgrade's outcome has not gone out; this finds those records and checks them again. It also counts, in their
campaign's counts, the campaign upgrades whose count storage left pending with no later write to finish it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from shared import logs
from shared.errors import ProductUpgradeError
from shared.retry import time_budget
from shared.store.records import utc_now
from shared.upgrades.runtime import get_runtime

log = logging.getLogger(__name__)

#: When the timer fires (NCRONTAB, with seconds): every 15 minutes.
SCHEDULE = "0 */15 * * * *"
#: One pass gives up within this many seconds, well inside host.json's functionTimeout (5 min).
RESUME_TIME_BUDGET_SECONDS = 240.0


def handle(timer: func.TimerRequest) -> None:
    """Resume the tracking of every upgrade whose checks have stopped; storage failing waits for the next run."""
    with logs.operation(), time_budget(RESUME_TIME_BUDGET_SECONDS):
        try:
            runtime = get_runtime()
            tracker = runtime.tracker
            if tracker is None:
                log.info("No storage connection: no upgrade is tracked, none to resume")
                return
            resumed = tracker.resume_stopped()
            settled = runtime.ledger.settle_counts(utc_now() - timedelta(seconds=tracker.stall_seconds))
        except ProductUpgradeError as exc:
            log.warning("Could not resume stopped tracking: %s; the next run tries again", exc.message)
            return
        late = " (the timer was past due)" if timer.past_due else ""
        log.info("Resumed the tracking of %d upgrades, counted %d in their campaigns%s", resumed, settled, late)
