"""Product upgrades as the fake keeps them: how each one runs, and how (and when) it ends.

An upgrade runs (``InProgress``, or a scripted interim status) until a status poll finds it due, after a number of
polls or at a time; it then ends with its :class:`Outcome`, one :class:`LineOutcome` per subscription when they
end differently (a partial upgrade).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Upgrade states that mean "still running" (a second create for the customer gets 409 900109).
RUNNING_STATES = frozenset({"inprogress", "notstarted", "pending", "queued", "running"})


@dataclass(frozen=True)
class LineOutcome:
    """How one line item (one subscription) ends."""

    status: str
    error_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How an upgrade ends: its final ``status`` and ``errorDetails`` (top level and on the line item)."""

    status: str = "Completed"
    error_details: dict[str, Any] | None = None
    line_item_error_details: dict[str, Any] | None = None
    #: One per subscription when they end differently (a partial upgrade); None: one line item, ending as the upgrade.
    line_items: tuple[LineOutcome, ...] | None = None


COMPLETED = Outcome()


def new_subscription() -> tuple[str, str]:
    """A line item's (subscription id, Azure plan id)."""
    return str(uuid.uuid4()), str(uuid.uuid4())


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Upgrade:
    upgrade_id: str
    customer_id: str
    product_family: str
    request_id: str | None
    correlation_id: str | None
    status: str = "InProgress"
    polls: int = 0
    #: Ends on the status poll after this many (None: not by polls).
    complete_after: int | None = None
    #: Ends on the first status poll at or after this time.time() (None: not by time).
    complete_at: float | None = None
    #: How it ends: status and error details (a Failed upgrade carries them; a Completed one has none).
    outcome: Outcome = COMPLETED
    upgraded_date: str | None = None
    error_details: dict[str, Any] | None = None
    line_item_error_details: dict[str, Any] | None = None
    created: str = field(default_factory=_now)
    #: The status shown while it runs (``InProgress``, or a state the app does not know).
    interim_status: str = "InProgress"
    #: (subscription id, Azure plan id) of each line item.
    subscriptions: list[tuple[str, str]] = field(default_factory=lambda: [new_subscription()])
    #: Each line item's end, once ended so (a partial upgrade); None: every line item as the upgrade.
    line_outcomes: tuple[LineOutcome, ...] | None = None

    @property
    def running(self) -> bool:
        return self.status.lower() in RUNNING_STATES or self.status == self.interim_status

    def as_record(self) -> dict[str, Any]:
        return {
            "upgrade_id": self.upgrade_id,
            "customer_id": self.customer_id,
            "product_family": self.product_family,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
        }

    def of(self, customer_id: str, product_family: str) -> bool:
        """Whether this is an upgrade of ``customer_id`` to ``product_family`` (case ignored)."""
        return self.customer_id.lower() == customer_id.lower() and self.product_family.lower() == product_family.lower()

    def due(self, now: float) -> bool:
        """Whether the status poll being answered ends it: enough polls, or its time (``now``, time.time()) come."""
        by_polls = self.complete_after is not None and self.polls > self.complete_after
        by_time = self.complete_at is not None and now >= self.complete_at
        return by_polls or by_time

    def end(self) -> None:
        """End it as its outcome says."""
        outcome = self.outcome
        self.status = outcome.status
        self.complete_after = self.complete_at = None
        self.error_details = outcome.error_details
        self.line_item_error_details = outcome.line_item_error_details
        self.line_outcomes = outcome.line_items
        if outcome.status.lower() == "completed":
            self.upgraded_date = self.upgraded_date or _now()

    def set_status(
        self,
        status: str,
        error_details: dict[str, Any] | None = None,
        line_item_error_details: dict[str, Any] | None = None,
    ) -> None:
        """Show ``status`` from now on, every line item alike, whatever its scripted end."""
        self.status = status
        self.line_outcomes = None
        self.complete_after = self.complete_at = None
        self.error_details = error_details
        self.line_item_error_details = line_item_error_details
        if status.lower() == "completed" and self.upgraded_date is None:
            self.upgraded_date = _now()
