"""The upgrade workflow every adapter calls: the rules, the identifiers, and nothing of HTTP requests or queues."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared import signals
from shared.errors import (
    AlreadyUpgradedError,
    IdempotencyKeyReusedError,
    NotEligibleError,
    PartnerCenterError,
    ProductUpgradeError,
)
from shared.ids import ID_NAMESPACE, OperationIds, correlation_guid, request_id_for
from shared.models import (
    Campaign,
    ProductUpgradeCreated,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
)
from shared.store.ledger import Ledger, NoLedger

if TYPE_CHECKING:  # the client imports requests; the adapters import this module, and indexing stays quick
    from shared.partner_center.client import PartnerCenterClient
    from shared.upgrades.tracking import UpgradeTracker

__all__ = [
    "ID_NAMESPACE",
    "OperationIds",
    "ProductUpgradeWorkflow",
    "UpgradeOrder",
    "correlation_guid",
    "request_id_for",
]

log = logging.getLogger(__name__)

#: Partner Center's "an upgrade is already in progress for this customer".
UPGRADE_IN_PROGRESS = "900109"

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def upgrade_id_in(description: str, customer_id: str) -> str | None:
    """The running upgrade's id in a 900109 description ("original upgrade {id} is in progress")."""
    for match in _GUID.finditer(description or ""):
        if match.group(0).lower() != customer_id.lower():
            return match.group(0)
    return None


@dataclass(frozen=True)
class UpgradeOrder:
    """One create as an adapter hands it to the workflow."""

    request: ProductUpgradeRequest
    #: Keyed ids (:meth:`OperationIds.of_caller`) say the request id is the caller's own: reserved first.
    ids: OperationIds
    #: The caller's own request id (Idempotency-Key, a queue message's or a CSV row's requestId), recorded.
    caller_request_id: str | None = None
    #: The wave it belongs to, recorded on the request and the upgrade (and counted).
    campaign: Campaign | None = None
    #: The caller asked: eligibility first, refusing with Partner Center's reason instead of creating.
    check_eligibility: bool = False


class ProductUpgradeWorkflow:
    """Create, check and track product upgrades for one partner."""

    def __init__(
        self,
        client: PartnerCenterClient,
        ledger: Ledger | None = None,
        tracker: UpgradeTracker | None = None,
    ) -> None:
        self._client = client
        self.ledger = ledger or NoLedger()
        self.tracker = tracker

    def create(self, order: UpgradeOrder) -> ProductUpgradeCreated:
        """:meth:`attempt`, with a failure recorded as the request's result: for a caller whose attempt is its last
        (an HTTP call, a row of the command line)."""
        try:
            return self.attempt(order)
        except ProductUpgradeError as exc:
            self.record_failure(order, exc)
            raise

    def attempt(self, order: UpgradeOrder) -> ProductUpgradeCreated:
        """Create the upgrade once per request id, record it in the ledger and start following it; a failure is
        left for the caller to record (:meth:`record_failure`) once it knows the request has ended.

        A keyed order's request id is reserved first: recorded ``accepted``, the recorded upgrade is returned
        without calling Partner Center; held for another customer, :class:`IdempotencyKeyReusedError`. When
        Partner Center says an upgrade is already in progress (409 900109), the running one is returned.
        """
        ids = order.ids
        if ids.keyed:
            replayed = self._reserve(order)
            if isinstance(replayed, ProductUpgradeCreated):
                return replayed
            ids = replayed
        try:
            created, new_upgrade = self._create(order.request, ids, order.check_eligibility)
        except ProductUpgradeError as exc:
            exc.business_answers = ids.business_answers
            raise
        log.info(
            "Product upgrade %s accepted for customer %s (%s)",
            created.upgrade_id,
            order.request.customer_id,
            order.request.product_family,
        )
        signals.upgrade_accepted(created, order.request)
        record = self.ledger.record_accepted(
            ids.request_id,
            created,
            caller_request_id=order.caller_request_id,
            correlation_id=ids.correlation_id,
            with_upgrade=new_upgrade,
            campaign=order.campaign,
        )
        if record is not None and self.tracker is not None:
            self.tracker.start(record)
        return created

    def _reserve(self, order: UpgradeOrder) -> ProductUpgradeCreated | OperationIds:
        """The caller's request id reserved: the upgrade it was accepted as, or the ids this attempt sends (the
        next MS-RequestId after an earlier refusal or failure)."""
        ids, request = order.ids, order.request
        existing = self.ledger.reserve(ids.request_id, request, ids.correlation_id, campaign=order.campaign)
        if existing is None:
            return ids
        if not existing.same_request(request):
            raise IdempotencyKeyReusedError(
                f"request id {ids.request_id} was already used for another customer or product family; "
                "use a new Idempotency-Key (or requestId) for each upgrade"
            )
        if existing.status == "accepted" and existing.upgrade_id:
            log.info(
                "Request %s was already accepted as upgrade %s; not sending it again",
                ids.request_id,
                existing.upgrade_id,
            )
            return ProductUpgradeCreated(existing.upgrade_id, request.customer_id, request.product_family)
        return ids.counting(existing.business_answers)

    def record_failure(self, order: UpgradeOrder, error: ProductUpgradeError) -> None:
        """Record ``error`` as the request's final result (``rejected``, or ``failed`` when transient): one more
        business answer of the request, counted from the order's ids or from what the failed attempt had counted."""
        answers = order.ids.counting(error.business_answers).business_answers + 1
        self.ledger.record_refused(
            order.ids.request_id,
            order.request,
            error,
            caller_request_id=order.caller_request_id,
            correlation_id=order.ids.correlation_id,
            business_answers=answers,
            campaign=order.campaign,
        )

    def check_eligibility(self, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesEligibility:
        return self._client.check_eligibility(
            request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )

    def get_status(self, upgrade_id: str, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesStatus:
        return self._client.get_status(
            upgrade_id, request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )

    def _create(
        self, request: ProductUpgradeRequest, ids: OperationIds, check_eligibility: bool
    ) -> tuple[ProductUpgradeCreated, bool]:
        """The upgrade, and whether it is new to the ledger (an upgrade already running may be recorded)."""
        if check_eligibility:
            eligibility = self.check_eligibility(request, OperationIds.new(ids.correlation_id))
            if not eligibility.is_eligible:
                if eligibility.upgrade_id:
                    self._raise_unless_running(request, eligibility.upgrade_id, ids, eligibility.reason)
                    return self._already_running(request, eligibility.upgrade_id)
                raise NotEligibleError(request.customer_id, eligibility.reason)
        try:
            created = self._client.create_upgrade(
                request, request_id=ids.partner_center_request_id, correlation_id=ids.partner_center_correlation_id
            )
        except PartnerCenterError as exc:
            if exc.status != 409 or exc.error_code != UPGRADE_IN_PROGRESS:
                raise
            eligibility = self.check_eligibility(request, OperationIds.new(ids.correlation_id))
            if eligibility.upgrade_id:
                self._raise_unless_running(request, eligibility.upgrade_id, ids, eligibility.reason)
            running = eligibility.upgrade_id or upgrade_id_in(exc.description, request.customer_id)
            if not running:
                raise
            return self._already_running(request, running)
        return created, True

    def _raise_unless_running(
        self, request: ProductUpgradeRequest, upgrade_id: str, ids: OperationIds, reason: str | None
    ) -> None:
        """Eligibility names an upgrade "already in place", completed ones included: ask its status first. Completed
        raises :class:`AlreadyUpgradedError`, failed or cancelled :class:`NotEligibleError`; running returns."""
        status = self.get_status(upgrade_id, request, OperationIds.new(ids.correlation_id))
        if status.is_running:
            return
        if status.is_completed:
            raise AlreadyUpgradedError(
                f"customer {request.customer_id} has already been upgraded (upgrade {upgrade_id} is {status.status})"
            )
        raise NotEligibleError(
            request.customer_id, f"{reason or 'its upgrade ended'} (upgrade {upgrade_id} is {status.status})"
        )

    def _already_running(self, request: ProductUpgradeRequest, upgrade_id: str) -> tuple[ProductUpgradeCreated, bool]:
        log.info("An upgrade for customer %s is already in progress: %s", request.customer_id, upgrade_id)
        # Started by us under another request id, it is in the ledger and tracked already; else (the portal,
        # another tool) it is recorded and tracked from here.
        new = self.ledger.find_upgrade(upgrade_id) is None
        return ProductUpgradeCreated(upgrade_id, request.customer_id, request.product_family), new
