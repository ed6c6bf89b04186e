"""The upgrade workflow both triggers call: the rules, the identifiers, and nothing of HTTP requests or queues."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

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


class ProductUpgradeWorkflow:
    """Create, check and track product upgrades for one partner."""

    def __init__(self, client: PartnerCenterClient) -> None:
        self._client = client

    def create(self, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradeCreated:
        created = self._client.create_upgrade(
            request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )
        log.info(
            "Product upgrade %s accepted for customer %s (%s); MS-RequestId %s, correlation %s",
            created.upgrade_id,
            request.customer_id,
            request.product_family,
            ids.request_id,
            ids.correlation_id,
        )
        return created

    def check_eligibility(self, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesEligibility:
        return self._client.check_eligibility(
            request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )

    def get_status(self, upgrade_id: str, request: ProductUpgradeRequest, ids: OperationIds) -> ProductUpgradesStatus:
        return self._client.get_status(
            upgrade_id, request, request_id=ids.request_id, correlation_id=ids.partner_center_correlation_id
        )
