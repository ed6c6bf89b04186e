"""Following an upgrade until it has ended: Partner Center's status every ``PRODUCT_UPGRADE_POLL_SECONDS``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shared.errors import ProductUpgradeError
from shared.models import ProductUpgradeRequest, ProductUpgradesStatus
from shared.upgrades.tracking import ended_state
from shared.upgrades.workflow import OperationIds, ProductUpgradeWorkflow

log = logging.getLogger(__name__)


def outcome_of(status: ProductUpgradesStatus) -> str:
    """``running``, ``completed`` or ``failed``, as the ledger names an upgrade's state."""
    return "running" if status.is_running else ended_state(status)


def follow_upgrade(
    workflow: ProductUpgradeWorkflow,
    upgrade_id: str,
    request: ProductUpgradeRequest,
    correlation_id: str,
    *,
    poll_seconds: float,
    stop: threading.Event,
    on_poll: Callable[[ProductUpgradesStatus], None] | None = None,
) -> ProductUpgradesStatus | None:
    """Ask for the status until it has ended (returned) or ``stop`` is set (None).

    Transient failures (throttling, outages) wait and ask again, after Retry-After when Partner Center gave
    one; a permanent refusal (the upgrade is unknown) raises.
    """
    while not stop.is_set():
        try:
            status = workflow.get_status(upgrade_id, request, OperationIds.new(correlation_id))
        except ProductUpgradeError as exc:
            if not exc.transient:
                raise
            wait = float(exc.retry_after) if exc.retry_after is not None else poll_seconds
            log.warning("Status of upgrade %s not read (%s); asking again in %.1f s", upgrade_id, exc.code, wait)
            stop.wait(wait)
            continue
        if not status.is_running:
            return status
        if on_poll is not None:
            on_poll(status)
        stop.wait(poll_seconds)
    return None
