"""Following an accepted upgrade until Partner Center says it has ended: the rules.

Every upgrade the app starts is recorded ``running`` in the ledger and gets a status check scheduled on the
tracking queue. A check asks Partner Center's status:

- still running: the ledger's status and ``updatedAt`` change, the next check is scheduled;
- ended (only ``Completed``, ``Succeeded``, ``Failed``, ``Cancelled``, ``Canceled`` end it; a status this app does
  not know is followed like a running one): the ledger records ``completed``, ``partial`` (completed, but a line
  item, one subscription, did not move) or ``failed`` (``Failed``, ``Cancelled``, ``Canceled``, or a 404 for the
  upgrade), and exactly one outcome message goes out;
- checks slow down as an upgrade runs long (:func:`poll_gap`): every poll interval for the first hour, then each
  gap twice the one before, up to ``PRODUCT_UPGRADE_MAX_POLL_SECONDS``;
- a check refused for our own reasons (401 after a token refresh, 403 900308 / 900309) is not the upgrade's end:
  an error is logged and the check is tried again with backoff;
- not ended ``PRODUCT_UPGRADE_TRACKING_HOURS`` after it was accepted: ``expired``, one outcome message;
- a transient failure: the same check again after Retry-After, else with backoff from the poll interval up to
  four times it.

Exactly one outcome per upgrade: every state change is conditional on the record's ETag; a check whose
number the record has already passed is stale and dropped, so a message delivered twice does nothing twice
(a write that lost only to an earlier check's late write is made again); the worker that wins the change to an
ended state claims the outcome and sends it (:mod:`shared.upgrades.outcomes`: at least once, each copy identical).

Nothing left behind: every 15 minutes :meth:`UpgradeTracker.resume_stopped` checks again any upgrade whose
outcome has not gone out and whose record has not changed for a while, whatever broke its chain of checks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared import signals
from shared.errors import PartnerCenterError, ProductUpgradeError, StorageUnavailableError
from shared.ids import correlation_guid
from shared.models import ProductUpgradeRequest, ProductUpgradesStatus
from shared.store.ledger import Ledger
from shared.store.records import UpgradeRecord, UpgradeState, iso, utc_now
from shared.store.scheduler import Scheduler
from shared.upgrades.checks import CheckResult, TrackingCheck
from shared.upgrades.outcomes import OutcomeSender

if TYPE_CHECKING:  # the client imports requests; the tracker adapter imports this module at indexing
    from shared.partner_center.client import PartnerCenterClient

log = logging.getLogger(__name__)

#: Transient failures back off from the poll interval up to this many times it.
MAX_BACKOFF_FACTOR = 4
#: Tracking counts as stopped when an upgrade's record, outcome not sent, has not changed for this many poll
#: intervals (past the longest backoff, 4) and at least :data:`MIN_STALL_SECONDS` (past an outcome's lease and any
#: Retry-After Partner Center is known to give).
STALL_POLLS = 6
MIN_STALL_SECONDS = 1800.0
#: Conditional writes of one check's result, each on a fresher record, before the check is tried again later.
MAX_WRITES = 3
#: Status checks come every poll interval for this long after an upgrade was accepted, then slow down.
STEADY_POLL_SECONDS = 3600.0
#: The longest gap between two checks when the tracker is built without one (``PRODUCT_UPGRADE_MAX_POLL_SECONDS``).
DEFAULT_MAX_POLL_SECONDS = 3600.0


def poll_gap(elapsed_seconds: float, poll_seconds: float, max_poll_seconds: float) -> float:
    """The gap before the next status check of an upgrade accepted ``elapsed_seconds`` ago.

    The poll interval for the first hour; then each gap twice the one before (2, 4, 8, ... poll intervals, when
    the checks come on time: derived from the time alone, so every worker, and a resumed chain, agree), up to
    ``max_poll_seconds``; never shorter than the poll interval. Continuous polling is what Partner Center
    throttles, and it publishes no duration for an upgrade.
    """
    past = elapsed_seconds - STEADY_POLL_SECONDS
    if past < 0:
        return poll_seconds
    doublings = math.floor(math.log2(min(past / poll_seconds + 2, 2.0**64)))
    return max(poll_seconds, min(max_poll_seconds, poll_seconds * 2.0**doublings))


def ended_state(status: ProductUpgradesStatus) -> UpgradeState:
    """What an ended Partner Center status means in the ledger."""
    if status.is_partial:
        return "partial"
    return "completed" if status.is_completed else "failed"


class UpgradeTracker:
    """Schedules and performs status checks; records what they learn in the ledger."""

    def __init__(
        self,
        client: PartnerCenterClient,
        ledger: Ledger,
        scheduler: Scheduler,
        *,
        poll_seconds: float,
        tracking_hours: float,
        max_poll_seconds: float = DEFAULT_MAX_POLL_SECONDS,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._scheduler = scheduler
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self._window = timedelta(hours=tracking_hours)
        self._outcomes = OutcomeSender(ledger, scheduler)

    def start(self, record: UpgradeRecord) -> None:
        """Schedule the first status check of a newly recorded upgrade; a failure is logged, never raised."""
        try:
            self._scheduler.schedule_check(TrackingCheck.first(record).to_json(), self.poll_seconds)
        except ProductUpgradeError as exc:
            log.warning(
                "Upgrade %s accepted but its tracking could not be scheduled: %s", record.upgrade_id, exc.message
            )

    def resume_stopped(self, now: datetime | None = None) -> int:
        """Schedule a status check, at once, for every upgrade whose tracking has stopped: outcome not sent, record
        unchanged for :attr:`stall_seconds` (its first check was never scheduled, a check went to the poison
        queue through a storage outage, a worker died). A check that was only late becomes a duplicate, which
        the check numbers drop. Returns how many were resumed; raises :class:`StorageUnavailableError`."""
        now = now or utc_now()
        updated_before = now - timedelta(seconds=self.stall_seconds)
        resumed = 0
        for record in self._ledger.unsent_upgrades(updated_before):
            if not self._stalled(record, now):
                continue  # a long-running upgrade whose next check is merely far off (see poll_gap)
            self._scheduler.schedule_check(TrackingCheck.first(record).to_json(), 0)
            log.warning(
                "Tracking of upgrade %s had stopped (%s, last change %s); checking it again",
                record.upgrade_id,
                record.state,
                iso(record.updated_at),
            )
            resumed += 1
        return resumed

    @property
    def stall_seconds(self) -> float:
        """How long an upgrade's record may stay unchanged, outcome not sent, before its tracking is resumed."""
        return max(STALL_POLLS * self.poll_seconds, MIN_STALL_SECONDS)

    def next_gap(self, record: UpgradeRecord, now: datetime | None = None) -> float:
        """Seconds until the next status check of a running upgrade (:func:`poll_gap`)."""
        elapsed = ((now or utc_now()) - record.accepted_at).total_seconds()
        return poll_gap(elapsed, self.poll_seconds, self.max_poll_seconds)

    def _stalled(self, record: UpgradeRecord, now: datetime) -> bool:
        """Unchanged past :attr:`stall_seconds`, and past twice the gap its last check scheduled (when running)."""
        unchanged = (now - record.updated_at).total_seconds()
        expected = self.next_gap(record, record.updated_at) if not record.ended else 0.0
        return unchanged >= max(self.stall_seconds, 2 * expected)

    def check(self, check: TrackingCheck) -> CheckResult:
        """One status check. Raises :class:`StorageUnavailableError` when the ledger or queues fail (the
        caller reschedules with :meth:`retry_later`)."""
        record = self._ledger.get_upgrade(check.ledger_key)
        if record is None or record.upgrade_id.lower() != check.upgrade_id.lower():
            log.warning("Upgrade %s is not in the ledger; dropping its status check", check.upgrade_id)
            return "missing"
        if record.ended:
            return "done" if record.outcome_sent else self._outcomes.recover(record, check)
        if check.check <= record.checks:
            log.info("Status check %d of upgrade %s was done already", check.check, check.upgrade_id)
            return "stale"
        request = ProductUpgradeRequest(record.customer_id, record.product_family)
        try:
            status = self._client.get_status(
                record.upgrade_id,
                request,
                request_id=str(uuid.uuid4()),
                correlation_id=correlation_guid(record.correlation_id or record.ledger_key),
            )
        except PartnerCenterError as exc:
            if exc.caller_refused:
                # About us (our token after a refresh, 900308 privileges, 900309 conditional access), not the
                # upgrade: never its end. An operator must act, so an error; the check goes on with backoff.
                log.error(
                    "Status check of upgrade %s refused for our own account (%s %s): %s; trying again later",
                    record.upgrade_id,
                    exc.status,
                    exc.error_code or "no code",
                    exc.description or exc.message,
                )
                return self._failed_check(record, check, exc)
            if exc.transient:
                return self._failed_check(record, check, exc)
            # 404 (the upgrade is unknown) or another refusal about it: it will not complete.
            details: dict[str, Any] = {"code": exc.error_code, "description": exc.description or exc.message}
            if exc.data:
                details["data"] = exc.data
            if exc.source:
                details["source"] = exc.source
            return self._end(record, check, "failed", error_details=details)
        except ProductUpgradeError as exc:
            return self._failed_check(record, check, exc)
        if not status.is_running:
            return self._end(record, check, ended_state(status), status=status)
        if self._expired(record):
            return self._end(record, check, "expired", status=status)
        return self._still_running(record, check, status)

    def retry_later(self, check: TrackingCheck, error: ProductUpgradeError | None = None) -> None:
        """Schedule the same check again with backoff (or the Retry-After ``error`` carries)."""
        self._scheduler.schedule_check(check.failed_again().to_json(), self._delay(check, error))

    # -- steps -------------------------------------------------------------------------------------------------
    def _still_running(self, record: UpgradeRecord, check: TrackingCheck, status: ProductUpgradesStatus) -> CheckResult:
        gap = self.next_gap(record)
        # Schedule before recording: a crash in between repeats this check, it never loses the chain.
        scheduled = self._scheduler.schedule_check(
            TrackingCheck(
                record.upgrade_id, record.customer_id, record.product_family, record.ledger_key, check.check + 1
            ).to_json(),
            gap,
        )
        updated = self._write(
            record,
            check,
            lambda current: replace(current, checks=check.check, updated_at=utc_now(), **_status_fields(status)),
        )
        if updated is None:
            # Another delivery of this check got there first and scheduled its own next check.
            self._scheduler.cancel(scheduled)
            return "stale"
        log.info("Upgrade %s is still running (%s); next check in %s s", record.upgrade_id, status.status, gap)
        signals.upgrade_checked(record, status.status)
        return "running"

    def _failed_check(self, record: UpgradeRecord, check: TrackingCheck, error: ProductUpgradeError) -> CheckResult:
        if self._expired(record):
            return self._end(record, check, "expired")
        log.warning("Status check of upgrade %s failed (%s); trying again later", record.upgrade_id, error.message)
        signals.status_check_failed(record, error)
        self.retry_later(check, error)
        # Looked at, if not learnt from: without this, a long spell of throttling would look like stopped
        # tracking to resume_stopped, which would add a check to a Partner Center already saying "later".
        with contextlib.suppress(ProductUpgradeError):  # the retry is scheduled either way
            self._ledger.update_upgrade(replace(record, updated_at=utc_now()))
        return "retry"

    def _end(
        self,
        record: UpgradeRecord,
        check: TrackingCheck,
        state: UpgradeState,
        *,
        status: ProductUpgradesStatus | None = None,
        error_details: Any = None,
    ) -> CheckResult:
        now = utc_now()

        def ended(current: UpgradeRecord) -> UpgradeRecord:
            changed = replace(
                current,
                state=state,
                checks=max(current.checks, check.check),
                updated_at=now,
                ended_at=now,
                outcome_claimed_at=now,
                **(_status_fields(status) if status is not None else {}),
            )
            return changed if error_details is None else replace(changed, error_details=error_details)

        claimed = self._write(record, check, ended)
        if claimed is None:
            log.info("Upgrade %s was ended by another worker", record.upgrade_id)
            return "stale"
        log.info("Upgrade %s ended: %s (%s)", record.upgrade_id, state, claimed.partner_center_status)
        signals.upgrade_ended(claimed)
        self._outcomes.send(claimed)
        return "ended"

    def _write(
        self, record: UpgradeRecord, check: TrackingCheck, change: Callable[[UpgradeRecord], UpgradeRecord]
    ) -> UpgradeRecord | None:
        """Record what ``check`` learnt: ``change`` applied to the record, conditionally. A write that fails
        because an earlier check's slow write landed in between (a worker that knew less) is made again on the
        fresh record; None when the record has ended or another delivery of this check, or a later one, wrote it.
        Raises :class:`StorageUnavailableError` when the record keeps changing (the check is tried again later)."""
        for _ in range(MAX_WRITES):
            written = self._ledger.update_upgrade(change(record))
            if written is not None:
                return written
            current = self._ledger.get_upgrade(check.ledger_key)
            if current is None or current.ended or current.checks >= check.check:
                return None
            log.info(
                "Upgrade %s: an earlier check's write landed before check %d's; writing again",
                record.upgrade_id,
                check.check,
            )
            record = current
        raise StorageUnavailableError(f"the ledger record of upgrade {record.upgrade_id} kept changing")

    def _expired(self, record: UpgradeRecord, now: datetime | None = None) -> bool:
        return (now or utc_now()) - record.accepted_at >= self._window

    def _delay(self, check: TrackingCheck, error: ProductUpgradeError | None) -> float:
        # Only Partner Center may ask for checks sooner than the poll interval.
        if isinstance(error, PartnerCenterError) and error.retry_after is not None:
            return float(error.retry_after)
        return self.poll_seconds * float(min(MAX_BACKOFF_FACTOR, 2**check.failures))


def _status_fields(status: ProductUpgradesStatus) -> dict[str, Any]:
    document = status.to_json()
    return {
        "partner_center_status": status.status,
        "line_items": document["lineItems"],
        "error_details": document["errorDetails"],
    }
