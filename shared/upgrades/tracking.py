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
(a write that lost only to an earlier check's late write is made again);
the worker that wins the change to an ended state claims the outcome, sends it, then marks it sent. Should it
die in between, a later delivery sends it once the claim is older than :data:`OUTCOME_LEASE_SECONDS`; so does
one that finds the claim released by a worker with too little time left to wait for storage's answer.

At least once, each copy identical: an outcome message carries ``outcomeId``, fixed per upgrade. A send whose
answer storage lost may have landed, and is sent again (by the SDK, or by the lease path): each such resend is
logged as a warning naming the ``outcomeId`` and flags the ledger row (``outcome_resent``).

Nothing left behind: every 15 minutes :meth:`UpgradeTracker.resume_stopped` checks again any upgrade whose
outcome has not gone out and whose record has not changed for a while, whatever broke its chain of checks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared import signals
from shared.errors import PartnerCenterError, ProductUpgradeError, StorageUnavailableError, ValidationError
from shared.ids import correlation_guid, outcome_id_for
from shared.models import ProductUpgradeRequest, ProductUpgradesStatus, parse_guid
from shared.store.ledger import Ledger
from shared.store.records import UpgradeRecord, UpgradeState, iso, utc_now
from shared.store.scheduler import NoTimeToSendError, Scheduler

if TYPE_CHECKING:  # the client imports requests; the tracker adapter imports this module at indexing
    from shared.partner_center.client import PartnerCenterClient

log = logging.getLogger(__name__)

#: How long a worker that claimed an outcome has to send it before another delivery may send it instead.
OUTCOME_LEASE_SECONDS = 300.0
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

#: Bounds of a tracking message's counts. The check number is stored in the ledger (a 32-bit integer in the
#: table); the failures only choose a backoff that stops growing after two, and 2 ** failures must stay cheap.
MAX_CHECKS = 2**31 - 1
MAX_FAILURES = 10_000
#: The ledger key of an upgrade: the request id (MS-RequestId) that started it, always a GUID.
_LEDGER_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

CheckResult = Literal["running", "ended", "retry", "stale", "done", "missing", "pending"]


@dataclass(frozen=True)
class TrackingCheck:
    """A status check of one upgrade: the message on the tracking queue."""

    upgrade_id: str
    customer_id: str
    product_family: str
    #: The ledger partition of the upgrade's record (the request id that started it).
    ledger_key: str
    #: Which check this is (1 for the first): the record counts the checks done, so a stale one is dropped.
    check: int = 1
    #: Transient failures in a row, for the backoff.
    failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "upgradeId": self.upgrade_id,
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "ledgerKey": self.ledger_key,
            "check": self.check,
            "failures": self.failures,
        }

    @classmethod
    def from_json(cls, data: object) -> TrackingCheck:
        if not isinstance(data, dict):
            raise ValidationError("a tracking message must be a JSON object")
        upgrade_id, ledger_key, family = data.get("upgradeId"), data.get("ledgerKey"), data.get("productFamily")
        check, failures = data.get("check", 1), data.get("failures", 0)
        if not all(isinstance(value, str) and 0 < len(value) <= 128 for value in (upgrade_id, ledger_key, family)):
            raise ValidationError("a tracking message needs upgradeId, ledgerKey and productFamily")
        if not (_count(check, 1, MAX_CHECKS) and _count(failures, 0, MAX_FAILURES)):
            raise ValidationError(
                f"a tracking message's check (1 to {MAX_CHECKS}) and failures (0 to {MAX_FAILURES}) must be counts"
            )
        assert isinstance(upgrade_id, str) and isinstance(ledger_key, str) and isinstance(family, str)
        if not _LEDGER_KEY.fullmatch(ledger_key):
            raise ValidationError("a tracking message's ledgerKey must be a ledger key (a request id, a GUID)")
        return cls(upgrade_id, parse_guid(data.get("customerId"), "customerId"), family, ledger_key, check, failures)

    def failed_again(self) -> TrackingCheck:
        """The same check after one more transient failure (the count stops at :data:`MAX_FAILURES`)."""
        return replace(self, failures=min(self.failures + 1, MAX_FAILURES))

    @classmethod
    def first(cls, record: UpgradeRecord) -> TrackingCheck:
        return cls(record.upgrade_id, record.customer_id, record.product_family, record.ledger_key, record.checks + 1)


def _count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


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
            return "done" if record.outcome_sent else self._recover_outcome(record, check)
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
        self._send_outcome(claimed)
        return "ended"

    def _recover_outcome(self, record: UpgradeRecord, check: TrackingCheck) -> CheckResult:
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
        self._send_outcome(claimed, again=again)
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

    def _send_outcome(self, record: UpgradeRecord, *, again: bool = False) -> None:
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
