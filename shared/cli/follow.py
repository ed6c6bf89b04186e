"""Following an upgrade until it has ended: Partner Center's status every ``PRODUCT_UPGRADE_POLL_SECONDS``.

When the ledger holds the upgrade, each check is the tracker's own: what it learns is recorded (``list`` and the
HTML report see it), and once it has ended its outcome message goes out, exactly as when the functions track it.
Else Partner Center is asked directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import PartnerCenterError, ProductUpgradeError
from shared.models import ProductUpgradeRequest, ProductUpgradesStatus
from shared.store.records import UpgradeRecord, UpgradeState
from shared.upgrades.checks import TrackingCheck
from shared.upgrades.runtime import Runtime
from shared.upgrades.tracking import ended_state
from shared.upgrades.workflow import OperationIds

from . import ledger_outcome

log = logging.getLogger(__name__)

OnPoll = Callable[[ProductUpgradesStatus], None]

#: A Partner Center status for each ledger state, for a record that holds none.
STATUS_OF_STATE: dict[UpgradeState, str] = {
    "running": "InProgress",
    "completed": "Completed",
    "partial": "Completed",
    "failed": "Failed",
    "expired": "InProgress",
}


@dataclass(frozen=True)
class Ended:
    """An upgrade that has ended: its last status document and its outcome, as the ledger names it."""

    status: ProductUpgradesStatus
    outcome: str


def outcome_of(status: ProductUpgradesStatus) -> str:
    """``running``, ``completed``, ``partial`` or ``failed``, as the ledger names an upgrade's state."""
    return "running" if status.is_running else ended_state(status)


def tracked(runtime: Runtime, ledger_key: str | None, upgrade_id: str) -> UpgradeRecord | None:
    """The upgrade's ledger record when storage is configured and the ledger holds it."""
    if runtime.tracker is None:
        return None
    return ledger_outcome.record(runtime.ledger, ledger_key, upgrade_id)


def check_through_tracker(runtime: Runtime, record: UpgradeRecord) -> UpgradeRecord:
    """One status check by the tracker (recorded in the ledger); the record as it stands after it."""
    assert runtime.tracker is not None
    runtime.tracker.check(TrackingCheck.first(record))
    return ledger_outcome.record(runtime.ledger, record.ledger_key, record.upgrade_id) or record


def status_of(record: UpgradeRecord) -> ProductUpgradesStatus:
    """The status document the ledger holds of an upgrade it has checked."""
    document = {
        "id": record.upgrade_id,
        "productFamily": record.product_family,
        # Before its first check, or ended without a status (Partner Center answered 404): what Partner Center
        # would say of an upgrade in the ledger's state (expired: it was still running when tracking stopped).
        "status": record.partner_center_status or STATUS_OF_STATE[record.state],
        "lineItems": record.line_items,
        "errorDetails": record.error_details,
    }
    return ProductUpgradesStatus.from_json(document, record.upgrade_id)


def follow_upgrade(
    runtime: Runtime,
    upgrade_id: str,
    request: ProductUpgradeRequest,
    correlation_id: str,
    *,
    ledger_key: str | None = None,
    stop: threading.Event,
    on_poll: OnPoll | None = None,
) -> Ended | None:
    """Ask for the status until it has ended (returned) or ``stop`` is set (None).

    Transient failures (throttling, outages) and refusals of our own account (403 900308 / 900309) wait and ask
    again, after Retry-After when Partner Center gave one; a permanent refusal (the upgrade is unknown) raises.
    """
    poll_seconds = runtime.settings.poll_seconds
    record = tracked(runtime, ledger_key, upgrade_id)
    outcome: str
    while not stop.is_set():
        try:
            if record is not None:
                record = check_through_tracker(runtime, record)
                status, outcome = status_of(record), record.state
            else:
                status = runtime.workflow.get_status(upgrade_id, request, OperationIds.new(correlation_id))
                outcome = outcome_of(status)
        except ProductUpgradeError as exc:
            if not (exc.transient or (isinstance(exc, PartnerCenterError) and exc.caller_refused)):
                raise
            wait = float(exc.retry_after) if exc.retry_after is not None else poll_seconds
            log.warning("Status of upgrade %s not read (%s); asking again in %.1f s", upgrade_id, exc.code, wait)
            stop.wait(wait)
            continue
        if outcome != "running":
            return Ended(status, outcome)
        if on_poll is not None:
            on_poll(status)
        stop.wait(poll_seconds)
    return None
