"""What the ledger says became of a campaign's row: its request's result, its upgrade's record and outcome.

Shared by both ways of running a campaign: ``--enqueue`` learns everything from the ledger; a direct run reads
the ledger's tracking state when storage is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shared.errors import StorageUnavailableError
from shared.store.ledger import Ledger
from shared.store.records import RequestRecord, UpgradeRecord

from .campaign import Result
from .html_report import not_upgraded

T = TypeVar("T")


def read(call: Callable[[], T]) -> T | None:
    """A ledger read; storage failing now is read again on the next round."""
    try:
        return call()
    except StorageUnavailableError:
        return None


def record(ledger: Ledger, ledger_key: str | None, upgrade_id: str | None) -> UpgradeRecord | None:
    """An upgrade in the ledger: in the partition of its request (``ledger_key``), else (an upgrade found running,
    or only its id known) by its id."""
    found = read(lambda: ledger.get_upgrade(ledger_key)) if ledger_key else None
    if upgrade_id and (found is None or found.upgrade_id != upgrade_id):
        found = read(lambda: ledger.find_upgrade(upgrade_id))
    return found


def result(previous: Result, ended: UpgradeRecord) -> Result:
    """The row's result with the ended upgrade's outcome, and Partner Center's reason when it did not complete."""
    message = None
    if ended.state == "partial":
        message = f"not upgraded: {not_upgraded(ended.line_items)}"
    elif ended.state != "completed" and isinstance(ended.error_details, dict):
        details = ended.error_details
        message = f"Partner Center: {details.get('code') or ''} {details.get('description') or ''}".strip()
    return previous.ended(ended.state, ended.partner_center_status, message)


def request_result(request: RequestRecord) -> Result:
    """A request record's result, as a report row shows it."""
    if request.status == "accepted":
        return Result("accepted", upgrade_id=request.upgrade_id)
    return Result(
        request.status,
        error_code=request.error_code,
        partner_center_error_code=request.partner_center_error_code,
        message=request.error_message,
    )
