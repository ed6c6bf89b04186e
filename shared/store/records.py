"""The ledger's records and their rules: a request's result, an upgrade's tracking state, times in ISO 8601.

Pure: nothing here touches storage (:mod:`shared.store.table_ledger` does); the adapters and the rules read
these types.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.models import Campaign, ProductUpgradeRequest
from shared.store.campaign_counts import CountedUpgrade

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

RequestStatus = Literal["reserved", "accepted", "rejected", "failed"]
UpgradeState = Literal["running", "completed", "partial", "failed", "expired"]
UPGRADE_STATES: tuple[UpgradeState, ...] = ("running", "completed", "partial", "failed", "expired")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, to the millisecond: sorts as text, reads everywhere."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RequestRecord:
    """The result of one request id (a create's ``MS-RequestId``)."""

    request_id: str
    customer_id: str
    product_family: str
    status: RequestStatus
    upgrade_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    partner_center_error_code: str | None = None
    #: The caller's own id (Idempotency-Key, the message's requestId), None when it gave none.
    caller_request_id: str | None = None
    correlation_id: str | None = None
    updated_at: datetime | None = None
    #: Business answers (refusals, recorded failures) so far: the next attempt sends the next MS-RequestId.
    business_answers: int = 0
    campaign: Campaign | None = None

    def same_request(self, request: ProductUpgradeRequest) -> bool:
        return (self.customer_id, self.product_family) == (request.customer_id, request.product_family)


@dataclass(frozen=True)
class UpgradeRecord:
    """An upgrade the app started, and where its tracking stands."""

    upgrade_id: str
    customer_id: str
    product_family: str
    state: UpgradeState
    #: The partition it lives in: the request id of the create that started it.
    ledger_key: str
    accepted_at: datetime
    updated_at: datetime
    partner_center_status: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    ended_at: datetime | None = None
    line_items: list[Any] = field(default_factory=list)
    error_details: Any = None
    #: Status checks done so far (a tracking message for check n is stale once n <= checks).
    checks: int = 0
    #: When an outcome message was claimed for sending, and whether it went out.
    outcome_claimed_at: datetime | None = None
    outcome_sent: bool = False
    #: The outcome message's ``outcomeId``, recorded when it is marked sent.
    outcome_id: str | None = None
    #: The outcome was sent again after storage lost an answer (or by the lease path): it may be on the queue twice.
    outcome_resent: bool = False
    campaign: Campaign | None = None
    #: The state the campaign's counts hold for this upgrade, as far as this record knows (None: not yet counted).
    counted_state: str | None = None
    etag: str | None = field(default=None, compare=False)
    #: The state the table holds for this record (as read or last written), whatever this copy was changed to.
    stored_state: str | None = field(default=None, compare=False, repr=False)

    @property
    def ended(self) -> bool:
        return self.state != "running"

    @property
    def count_pending(self) -> bool:
        """A campaign's upgrade whose present state may not be in the campaign's counts yet."""
        return self.campaign is not None and self.counted_state != self.state

    def counted(self) -> CountedUpgrade:
        """What the campaign's counts need of this record."""
        assert self.campaign is not None
        minutes = (self.ended_at - self.accepted_at).total_seconds() / 60 if self.ended_at else None
        return CountedUpgrade(
            ledger_key=self.ledger_key,
            campaign=self.campaign.name,
            campaign_key=self.campaign.key,
            state=self.state,
            accepted_at=iso(self.accepted_at) or "",
            ended_at=iso(self.ended_at),
            minutes_to_end=max(0.0, minutes) if minutes is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The listing's item: every key present, ``null`` where unknown."""
        return {
            "upgradeId": self.upgrade_id,
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "campaign": self.campaign.name if self.campaign else None,
            "state": self.state,
            "partnerCenterStatus": self.partner_center_status,
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
            "acceptedAt": iso(self.accepted_at),
            "updatedAt": iso(self.updated_at),
            "endedAt": iso(self.ended_at),
        }


@dataclass(frozen=True)
class UpgradePage:
    items: list[UpgradeRecord]
    continuation_token: str | None
