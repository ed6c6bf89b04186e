"""The ledger's records as table entities and back: property names, JSON properties, the campaign columns."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.models import Campaign
from shared.store.records import UPGRADE_STATES, RequestRecord, UpgradeRecord, iso, parse_iso, utc_now

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

REQUEST_ROW = "request"
UPGRADE_ROW = "upgrade"

#: Table properties hold at most 64 KiB of text; Partner Center's line items are far smaller, but never fail on it.
MAX_JSON_PROPERTY = 30_000


def request_entity(record: RequestRecord, correlation_id: str) -> dict[str, Any]:
    return _without_none(
        {
            "PartitionKey": record.request_id,
            "RowKey": REQUEST_ROW,
            "Status": record.status,
            "CustomerId": record.customer_id,
            "ProductFamily": record.product_family,
            "UpgradeId": record.upgrade_id,
            "ErrorCode": record.error_code,
            "ErrorMessage": record.error_message,
            "PartnerCenterErrorCode": record.partner_center_error_code,
            "CallerRequestId": record.caller_request_id,
            "CorrelationId": record.correlation_id or correlation_id,
            "UpdatedAt": iso(record.updated_at),
            "BusinessAnswers": record.business_answers or None,
            **_campaign_properties(record.campaign),
        }
    )


def _campaign_properties(campaign: Campaign | None) -> dict[str, Any]:
    return {"Campaign": campaign.name, "CampaignKey": campaign.key} if campaign else {}


def _campaign_from(entity: Mapping[str, Any]) -> Campaign | None:
    name, key = _opt(entity.get("Campaign")), _opt(entity.get("CampaignKey"))
    return Campaign(name, key) if name and key else None


def request_from(entity: Mapping[str, Any]) -> RequestRecord:
    status = str(entity.get("Status") or "accepted")
    if status not in ("reserved", "accepted", "rejected", "failed"):
        raise KeyError(f"unknown request status {status!r}")
    return RequestRecord(
        request_id=str(entity["PartitionKey"]),
        customer_id=str(entity["CustomerId"]),
        product_family=str(entity["ProductFamily"]),
        status=status,  # type: ignore[arg-type]
        upgrade_id=_opt(entity.get("UpgradeId")),
        error_code=_opt(entity.get("ErrorCode")),
        error_message=_opt(entity.get("ErrorMessage")),
        partner_center_error_code=_opt(entity.get("PartnerCenterErrorCode")),
        caller_request_id=_opt(entity.get("CallerRequestId")),
        correlation_id=_opt(entity.get("CorrelationId")),
        updated_at=parse_iso(entity.get("UpdatedAt")),
        business_answers=int(entity.get("BusinessAnswers") or 0),
        campaign=_campaign_from(entity),
    )


def upgrade_entity(record: UpgradeRecord) -> dict[str, Any]:
    return _without_none(
        {
            "PartitionKey": record.ledger_key,
            "RowKey": UPGRADE_ROW,
            "UpgradeId": record.upgrade_id,
            "CustomerId": record.customer_id,
            "ProductFamily": record.product_family,
            "State": record.state,
            "PartnerCenterStatus": record.partner_center_status,
            "RequestId": record.request_id,
            "CorrelationId": record.correlation_id,
            "AcceptedAt": iso(record.accepted_at),
            "UpdatedAt": iso(record.updated_at),
            "EndedAt": iso(record.ended_at),
            "LineItems": _json_property(record.line_items) if record.line_items else None,
            "ErrorDetails": _json_property(record.error_details) if record.error_details is not None else None,
            "Checks": record.checks,
            "OutcomeClaimedAt": iso(record.outcome_claimed_at),
            "OutcomeSent": record.outcome_sent,
            "OutcomeId": record.outcome_id,
            "OutcomeResent": record.outcome_resent or None,
            **_campaign_properties(record.campaign),
            "CountedState": record.counted_state,
            # Only for the sweep's query (a filter cannot compare two properties).
            "CountPending": record.count_pending if record.campaign else None,
        }
    )


def upgrade_from(entity: Mapping[str, Any]) -> UpgradeRecord:
    state = str(entity.get("State") or "running")
    if state not in UPGRADE_STATES:
        raise KeyError(f"unknown upgrade state {state!r}")
    accepted_at = parse_iso(entity.get("AcceptedAt")) or utc_now()
    metadata = getattr(entity, "metadata", None) or {}
    return UpgradeRecord(
        upgrade_id=str(entity["UpgradeId"]),
        customer_id=str(entity["CustomerId"]),
        product_family=str(entity["ProductFamily"]),
        state=state,
        ledger_key=str(entity["PartitionKey"]),
        accepted_at=accepted_at,
        updated_at=parse_iso(entity.get("UpdatedAt")) or accepted_at,
        partner_center_status=_opt(entity.get("PartnerCenterStatus")),
        request_id=_opt(entity.get("RequestId")),
        correlation_id=_opt(entity.get("CorrelationId")),
        ended_at=parse_iso(entity.get("EndedAt")),
        line_items=_from_json_property(entity.get("LineItems"), []),
        error_details=_from_json_property(entity.get("ErrorDetails"), None),
        checks=int(entity.get("Checks") or 0),
        outcome_claimed_at=parse_iso(entity.get("OutcomeClaimedAt")),
        outcome_sent=bool(entity.get("OutcomeSent")),
        outcome_id=_opt(entity.get("OutcomeId")),
        outcome_resent=bool(entity.get("OutcomeResent")),
        campaign=_campaign_from(entity),
        counted_state=_opt(entity.get("CountedState")),
        etag=metadata.get("etag"),
        stored_state=state,
    )


def _json_property(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= MAX_JSON_PROPERTY else json.dumps({"truncated": True})


def _from_json_property(value: object, default: Any) -> Any:
    if not isinstance(value, str):
        return default
    try:
        return json.loads(value)
    except ValueError:
        return default


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _without_none(entity: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entity.items() if value is not None}
