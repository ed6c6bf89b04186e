"""An ended upgrade's outcome message: its one shape, and sending it exactly once, at least once.

The worker that wins the change to an ended state claims the outcome, sends it, then marks it sent. Should it die
in between, a later delivery sends it once the claim is older than :data:`OUTCOME_LEASE_SECONDS`; so does one that
finds the claim released by a worker with too little time left to wait for storage's answer. Each copy is
identical (``outcomeId`` is fixed per upgrade); a resend that may have left a second copy is logged as a warning
naming the ``outcomeId`` and flags the ledger row (``outcome_resent``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any

from shared.errors import ProductUpgradeError
from shared.ids import outcome_id_for
from shared.store.ledger import Ledger
from shared.store.records import UpgradeRecord, utc_now
from shared.store.scheduler import NoTimeToSendError, Scheduler
from shared.upgrades.checks import CheckResult, TrackingCheck

log = logging.getLogger(__name__)

#: How long a worker that claimed an outcome has to send it before another delivery may send it instead.
OUTCOME_LEASE_SECONDS = 300.0


def outcome_message(record: UpgradeRecord) -> dict[str, Any]:
    """The outcome message of an ended upgrade: every key present, ``null`` where it does not apply.

    One shape of a record: the listing's item (:meth:`UpgradeRecord.to_json`) less what only tracking reads
    (``state``, which is the ``outcome``, and ``updatedAt``), with Partner Center's last line items and details.
    """
    item = record.to_json()
    del item["state"], item["updatedAt"]
    return {
        "outcome": record.state,
        "outcomeId": outcome_id_for(record.upgrade_id),
        **item,
        "lineItems": record.line_items,
        "errorDetails": record.error_details,
    }


class OutcomeSender:
    """Sends the outcome of an ended upgrade this worker has claimed, and recovers one whose sender did not
    confirm it."""

    def __init__(self, ledger: Ledger, scheduler: Scheduler) -> None:
        self._ledger = ledger
        self._scheduler = scheduler

    def recover(self, record: UpgradeRecord, check: TrackingCheck) -> CheckResult:
        """The upgrade ended but its outcome was not marked sent: send it once the claim has lapsed. A claim that
        its worker released unsent (None) lapses 5 minutes after the end, and sending it then makes no copy."""
        again = record.outcome_claimed_at is not None
        now = utc_now()
        claimed_at = record.outcome_claimed_at or record.ended_at or now
        age = (now - claimed_at).total_seconds()
        if age < OUTCOME_LEASE_SECONDS:
            self._scheduler.schedule_check(check.to_json(), OUTCOME_LEASE_SECONDS - age + 1)
            return "pending"
        claimed = self._ledger.update_upgrade(replace(record, outcome_claimed_at=now))
        if claimed is None:
            return "stale"
        if again:
            log.warning(
                "Outcome %s of upgrade %s: sending it again, its first sender did not confirm it; it may arrive twice",
                outcome_id_for(record.upgrade_id),
                record.upgrade_id,
            )
        self.send(claimed, again=again)
        return "ended"

    def send(self, record: UpgradeRecord, *, again: bool = False) -> None:
        """Send the outcome of ``record`` (claimed by this worker), then mark it sent with its ``outcomeId``, and
        flagged when this or an earlier send may have left a second copy (``again``: the lease path's resend)."""
        message = outcome_message(record)
        try:
            resends = self._scheduler.send_outcome(message)
        except NoTimeToSendError:
            self._leave_outcome_for_later(record)
            return
        # Sent: from here on nothing may raise, or the check would be retried and the outcome sent again.
        sent = replace(
            record,
            outcome_sent=True,
            outcome_id=message["outcomeId"],
            outcome_resent=record.outcome_resent or again or resends > 0,
        )
        try:
            marked = self._ledger.update_upgrade(sent) is not None
        except ProductUpgradeError:
            marked = False
        if not marked:
            log.warning(
                "Outcome %s of upgrade %s sent, but not marked sent in the ledger: it goes out again once its claim "
                "lapses",
                message["outcomeId"],
                record.upgrade_id,
            )

    def _leave_outcome_for_later(self, record: UpgradeRecord) -> None:
        """Too little of the budget is left to wait for storage's whole answer, and a shorter wait could make a
        copy: release the claim unsent (so its later send is not taken for a resend) and check again once it would
        have lapsed. Should the release fail, the claim lapses all the same."""
        log.warning(
            "Outcome %s of upgrade %s: too little time left to wait for storage's answer; it is sent in %d s",
            outcome_id_for(record.upgrade_id),
            record.upgrade_id,
            OUTCOME_LEASE_SECONDS,
        )
        with contextlib.suppress(ProductUpgradeError):
            self._ledger.update_upgrade(replace(record, outcome_claimed_at=None))
        self._scheduler.schedule_check(TrackingCheck.first(record).to_json(), OUTCOME_LEASE_SECONDS + 1)
