"""The tracking queue's adapter: one scheduled status check in, the ledger and outcomes queue updated.

A tracking message never ends in the poison queue: whatever goes wrong with a check, the same check is
scheduled again with backoff; only when even that fails (storage itself down) does the host retry it.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared import logs
from shared.errors import ProductUpgradeError, StorageUnavailableError, ValidationError
from shared.functions.messages import decode_json_message
from shared.partner_center.pace import customer_hold_patience
from shared.retry import time_budget
from shared.upgrades.checks import TrackingCheck
from shared.upgrades.runtime import get_runtime

log = logging.getLogger(__name__)

#: One check gives up within this many seconds in all, well inside host.json's functionTimeout (5 min).
TRACKING_TIME_BUDGET_SECONDS = 120.0
#: A customer Partner Center holds for longer than this has its check scheduled after the hold, not waited for.
HOLD_PATIENCE_SECONDS = 5.0


def handle(msg: func.QueueMessage) -> None:
    """Perform the status check a tracking message asks for."""
    with (
        logs.operation(messageId=msg.id or None),
        time_budget(TRACKING_TIME_BUDGET_SECONDS),
        customer_hold_patience(HOLD_PATIENCE_SECONDS),
    ):
        try:
            check = TrackingCheck.from_json(decode_json_message(msg.get_body() or b""))
        except ValidationError as exc:
            # Only this app writes the tracking queue: a malformed message is a bug, not a request to answer.
            log.error("Dropping a malformed tracking message %s: %s", msg.id, exc.message)
            return
        logs.bind(upgradeId=check.upgrade_id)
        tracker = get_runtime().tracker
        if tracker is None:
            raise StorageUnavailableError("tracking needs the storage connection (AzureWebJobsStorage)")
        try:
            tracker.check(check)
        except Exception as exc:
            if not isinstance(exc, ProductUpgradeError):
                log.exception("Status check of upgrade %s failed unexpectedly", check.upgrade_id)
            else:
                log.warning("Status check of upgrade %s failed: %s", check.upgrade_id, exc.message)
            tracker.retry_later(check, exc if isinstance(exc, ProductUpgradeError) else None)
