"""The bodies Partner Center answers about upgrades: the status document and the eligibility answer.

A status document is shaped like the docs' example: one line item per subscription, source ``AzureSubscription``
with the subscription's GUID, target ``Microsoft Azure plan``, and no ``errorDetails`` key where there is no error.
"""

from __future__ import annotations

from typing import Any

from sandbox.constants import ALREADY_UPGRADED_REASON
from sandbox.partner_center.upgrades import LineOutcome, Upgrade

#: The products' names in the docs' example status document (their ids are the subscriptions' GUIDs).
SOURCE_PRODUCT_NAME = "AzureSubscription"
TARGET_PRODUCT_NAME = "Microsoft Azure plan"


def status_document(upgrade: Upgrade) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": upgrade.upgrade_id,
        "productFamily": upgrade.product_family,
        "status": upgrade.status,
        "lineItems": line_items(upgrade),
        "attributes": {"objectType": "ProductUpgradesStatus"},
    }
    if upgrade.error_details is not None:
        body["errorDetails"] = upgrade.error_details
    return body


def line_items(upgrade: Upgrade) -> list[dict[str, Any]]:
    """One per subscription, as in the docs' example; ``errorDetails`` only where there is an error."""
    ends = upgrade.line_outcomes or tuple(
        LineOutcome(upgrade.status, upgrade.line_item_error_details) for _ in upgrade.subscriptions
    )
    items = []
    for (subscription_id, plan_id), end in zip(upgrade.subscriptions, ends, strict=False):
        item: dict[str, Any] = {
            "sourceProduct": {"id": subscription_id, "name": SOURCE_PRODUCT_NAME},
            "targetProduct": {"id": plan_id, "name": TARGET_PRODUCT_NAME},
            "upgradedDate": upgrade.upgraded_date if end.status.lower() == "completed" else None,
            "status": end.status,
        }
        if end.error_details is not None:
            item["errorDetails"] = end.error_details
        items.append(item)
    return items


def eligibility_document(
    customer_id: str,
    product_family: str,
    *,
    ineligible_reason: str | None,
    running: Upgrade | None,
    completed: Upgrade | None,
) -> dict[str, Any]:
    """``upgradeId`` names an upgrade "already in place" (the docs' words): a running one, else a completed one."""
    in_place = running or completed
    reason = ineligible_reason
    if reason is None and in_place is not None:
        reason = "An upgrade is already in progress." if running else ALREADY_UPGRADED_REASON
    return {
        "customerId": customer_id,
        "productFamily": product_family,
        "isEligible": ineligible_reason is None and in_place is None,
        "upgradeId": in_place.upgrade_id if in_place is not None else None,
        "reason": reason,
        "attributes": {"objectType": "ProductUpgradesEligibility"},
    }
