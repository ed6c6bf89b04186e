"""The upgrade workflow both triggers call: the rules, the identifiers, and nothing of HTTP requests or queues."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from shared.errors import IdempotencyKeyReusedError, NotEligibleError, PartnerCenterError
from shared.idempotency import IdempotencyStore, NoIdempotencyStore
from shared.models import (
    ProductUpgradeCreated,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
)
from shared.partner_center import PartnerCenterClient

log = logging.getLogger(__name__)

#: Namespace of our name-based UUIDs: the same key gives the same id in every process, after restarts.
ID_NAMESPACE = uuid.UUID("6f1f7a52-3c0e-4f7e-9a39-3a4c8c1e0b5d")

#: Partner Center's "an upgrade is already in progress for this customer".
UPGRADE_IN_PROGRESS = "900109"


def request_id_for(kind: str, key: str) -> str:
    """A deterministic ``MS-RequestId`` for an idempotency key (``kind`` keeps HTTP and queue keys apart).

    A key that is already a GUID is used as it is, so a caller who sends GUIDs sees them at Partner Center.
    """
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{key}"))


def correlation_guid(value: str) -> str:
    """Partner Center wants a GUID in ``MS-CorrelationId``: a caller's GUID as it is, anything else mapped."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, f"correlation:{value}"))


@dataclass(frozen=True)
class OperationIds:
    """The ids of one logical operation: ``request_id`` is the same on every retry of it."""

    request_id: str
    correlation_id: str

    @property
    def partner_center_correlation_id(self) -> str:
        return correlation_guid(self.correlation_id)

    @classmethod
    def new(cls, correlation_id: str) -> OperationIds:
        """Ids for a read (eligibility, status): a fresh request id, nothing to deduplicate."""
        return cls(str(uuid.uuid4()), correlation_id)


class ProductUpgradeWorkflow:
    """Create, check and track product upgrades for one partner."""

    def __init__(self, client: PartnerCenterClient, idempotency: IdempotencyStore | None = None) -> None:
        self._client = client
        self._idempotency = idempotency or NoIdempotencyStore()

    def create(
        self, request: ProductUpgradeRequest, ids: OperationIds, *, check_eligibility: bool = False
    ) -> ProductUpgradeCreated:
        """Create the upgrade once per ``ids.request_id``.

        A request id already recorded returns the recorded upgrade without calling Partner Center. When
        Partner Center says an upgrade is already in progress (409 900109), the running one is looked up
        and returned. ``check_eligibility`` asks first and raises :class:`NotEligibleError` with Partner
        Center's reason instead of creating.
        """
        recorded = self._idempotency.get(ids.request_id)
        if recorded is not None:
            if (recorded.customer_id, recorded.product_family) != (request.customer_id, request.product_family):
                raise IdempotencyKeyReusedError(
                    f"request id {ids.request_id} was already used for another customer or product family; "
                    "use a new Idempotency-Key (or requestId) for each upgrade"
                )
            log.info(
                "Request %s was already accepted as upgrade %s; not sending it again",
                ids.request_id,
                recorded.upgrade_id,
            )
            return recorded
        if check_eligibility:
            eligibility = self.check_eligibility(request, OperationIds.new(ids.correlation_id))
            if not eligibility.is_eligible:
                if eligibility.upgrade_id:
                    return self._record(ids, self._already_running(request, eligibility.upgrade_id))
                raise NotEligibleError(request.customer_id, eligibility.reason)
        try:
            created = self._client.create_upgrade(
                request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
            )
        except PartnerCenterError as exc:
            if exc.status != 409 or exc.error_code != UPGRADE_IN_PROGRESS:
                raise
            running = self.check_eligibility(request, OperationIds.new(ids.correlation_id)).upgrade_id
            if not running:
                raise
            created = self._already_running(request, running)
        log.info(
            "Product upgrade %s accepted for customer %s (%s)",
            created.upgrade_id,
            request.customer_id,
            request.product_family,
        )
        return self._record(ids, created)

    def check_eligibility(self, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesEligibility:
        return self._client.check_eligibility(
            request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )

    def get_status(self, upgrade_id: str, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesStatus:
        return self._client.get_status(
            upgrade_id, request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )

    def _record(self, ids: OperationIds, created: ProductUpgradeCreated) -> ProductUpgradeCreated:
        self._idempotency.put(ids.request_id, created, ids.correlation_id)
        return created

    @staticmethod
    def _already_running(request: ProductUpgradeRequest, upgrade_id: str) -> ProductUpgradeCreated:
        log.info("An upgrade for customer %s is already in progress: %s", request.customer_id, upgrade_id)
        return ProductUpgradeCreated(upgrade_id, request.customer_id, request.product_family)
