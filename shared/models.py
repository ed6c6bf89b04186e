"""Partner Center's product-upgrade resources, as frozen dataclasses, with the names Partner Center uses."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from shared.errors import UpstreamUnavailableError, ValidationError

log = logging.getLogger(__name__)

DEFAULT_PRODUCT_FAMILY = "Azure"

#: Partner Center matches product families case-insensitively ("azure" and "Azure" both appear in its
#: docs); by lower-case name, its own spelling, so one family has one spelling in idempotency and on the wire.
PRODUCT_FAMILY_SPELLINGS = {"azure": "Azure"}
_PRODUCT_FAMILY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: Partner Center's error descriptions are "up to 1,024 characters": kept whole, cut beyond.
MAX_DESCRIPTION = 1024

#: A caller's own id (correlation id, request id, idempotency key): printable and bounded, so that it
#: can neither forge a log line nor bloat one.
MAX_CALLER_ID = 256

#: Partner Center status values that mean the upgrade is still under way (compared case-insensitively).
RUNNING_STATUSES = frozenset({"inprogress", "notstarted", "pending", "queued", "running"})
#: Partner Center status values that mean the upgrade succeeded (compared case-insensitively).
COMPLETED_STATUSES = frozenset({"completed", "succeeded"})
#: The only values that end an upgrade. Partner Center publishes no list of states, so any value outside these
#: (a new intermediate state, a typo) is followed like a running one, never taken for an end.
ENDED_STATUSES = COMPLETED_STATUSES | frozenset({"failed", "cancelled", "canceled"})

#: Unknown status values already warned about in this process (a warning each, not one per check).
_warned_statuses: set[str] = set()
_warned_lock = threading.Lock()
_MAX_WARNED = 256

#: Largest request body or queue message we parse.
MAX_BODY_BYTES = 64 * 1024

JSONObject = dict[str, Any]


def parse_guid(value: object, name: str) -> str:
    """The canonical lower-case form of a GUID, or :class:`ValidationError` naming the field."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} is required and must be a GUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValidationError(f"{name} must be a GUID, like 00000000-0000-0000-0000-000000000000") from None


def optional_str(data: JSONObject, key: str, *, max_length: int = 256) -> str | None:
    """An optional string field: absent or null gives None; anything else must be a short string."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a string")
    value = value.strip()
    if len(value) > max_length:
        raise ValidationError(f"{key} must be at most {max_length} characters")
    return value or None


def parse_caller_id(value: str, name: str) -> str:
    """A caller's id as it is, or :class:`ValidationError` when it is not printable or is too long."""
    if len(value) > MAX_CALLER_ID or not value.isprintable():
        raise ValidationError(f"{name} must be printable and at most {MAX_CALLER_ID} characters")
    return value


@dataclass(frozen=True)
class Campaign:
    """A named wave of upgrades: ``name`` as the caller spelled it, ``key`` what names are compared by.

    Not Partner Center's: ours. Built by :func:`shared.upgrades.campaigns.parse_campaign` (the naming rules);
    the store keeps both and never checks them again.
    """

    name: str
    key: str


@dataclass(frozen=True)
class ProductUpgradeRequest:
    """What a caller asks for: upgrade this customer's product family (the body of Partner Center's calls)."""

    customer_id: str
    product_family: str = DEFAULT_PRODUCT_FAMILY

    @classmethod
    def from_json(cls, data: object) -> ProductUpgradeRequest:
        """Validate a decoded JSON body; raises :class:`ValidationError` with a caller-facing message."""
        if not isinstance(data, dict):
            raise ValidationError("the body must be a JSON object")
        obj = cast(JSONObject, data)
        customer_id = parse_guid(obj.get("customerId"), "customerId")
        return cls(customer_id=customer_id, product_family=parse_product_family(obj.get("productFamily")))

    def to_json(self) -> JSONObject:
        return {"customerId": self.customer_id, "productFamily": self.product_family}


def parse_product_family(value: object) -> str:
    if value is None:
        return DEFAULT_PRODUCT_FAMILY
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("productFamily must be a non-empty string, like Azure")
    family = value.strip()
    if not _PRODUCT_FAMILY.fullmatch(family):
        raise ValidationError("productFamily must be a short name of ASCII letters and digits, like Azure")
    return PRODUCT_FAMILY_SPELLINGS.get(family.lower(), family)


@dataclass(frozen=True)
class ProductUpgradeCreated:
    """Partner Center accepted the upgrade (202): its id, parsed from ``Location``."""

    upgrade_id: str
    customer_id: str
    product_family: str


@dataclass(frozen=True)
class ProductUpgradesEligibility:
    customer_id: str
    product_family: str
    is_eligible: bool
    upgrade_id: str | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: JSONObject, request: ProductUpgradeRequest) -> ProductUpgradesEligibility:
        return cls(
            customer_id=_str_or(data.get("customerId"), request.customer_id),
            product_family=_str_or(data.get("productFamily"), request.product_family),
            is_eligible=bool(data.get("isEligible")),
            upgrade_id=_str_or_none(data.get("upgradeId")),
            reason=_str_or_none(data.get("reason")),
        )

    def to_json(self) -> JSONObject:
        return {
            "customerId": self.customer_id,
            "productFamily": self.product_family,
            "isEligible": self.is_eligible,
            "upgradeId": self.upgrade_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ErrorDetails:
    """Partner Center's ``errorDetails``: its REST docs name the text ``message``, both SDKs ``description``.

    ``description`` is the canonical key, filled from ``message`` when only that came; ``message`` is
    kept too (and given back) when Partner Center sent it. Each is kept up to 1,024 characters.
    """

    code: str | None
    description: str | None
    message: str | None = None

    @property
    def present(self) -> bool:
        """True when it says something (a code or a text): ``{}`` or all-null details are no error."""
        return bool(self.code or self.description or self.message)

    @classmethod
    def from_json(cls, data: object) -> ErrorDetails | None:
        if not isinstance(data, dict):
            return None
        code = data.get("code")
        message = _text(data.get("message"))
        return cls(
            code=None if code is None else str(code),
            description=_text(data.get("description")) or message,
            message=message,
        )

    def to_json(self) -> JSONObject:
        body: JSONObject = {"code": self.code, "description": self.description}
        if self.message is not None:
            body["message"] = self.message
        return body


@dataclass(frozen=True)
class UpgradeProduct:
    id: str | None
    name: str | None

    @classmethod
    def from_json(cls, data: object) -> UpgradeProduct | None:
        if not isinstance(data, dict):
            return None
        return cls(id=_str_or_none(data.get("id")), name=_str_or_none(data.get("name")))

    def to_json(self) -> JSONObject:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True)
class UpgradesLineItem:
    source_product: UpgradeProduct | None
    target_product: UpgradeProduct | None
    upgraded_date: str | None
    status: str | None
    error_details: ErrorDetails | None

    @classmethod
    def from_json(cls, data: object) -> UpgradesLineItem:
        obj: JSONObject = data if isinstance(data, dict) else {}
        return cls(
            source_product=UpgradeProduct.from_json(obj.get("sourceProduct")),
            target_product=UpgradeProduct.from_json(obj.get("targetProduct")),
            upgraded_date=_str_or_none(obj.get("upgradedDate")),
            status=_str_or_none(obj.get("status")),
            error_details=ErrorDetails.from_json(obj.get("errorDetails")),
        )

    @property
    def not_upgraded(self) -> bool:
        """This subscription did not move: a status other than success, or error details."""
        failed_status = self.status is not None and self.status.strip().lower() not in COMPLETED_STATUSES
        return failed_status or (self.error_details is not None and self.error_details.present)

    def to_json(self) -> JSONObject:
        return {
            "sourceProduct": self.source_product.to_json() if self.source_product else None,
            "targetProduct": self.target_product.to_json() if self.target_product else None,
            "upgradedDate": self.upgraded_date,
            "status": self.status,
            "errorDetails": self.error_details.to_json() if self.error_details else None,
        }


@dataclass(frozen=True)
class ProductUpgradesStatus:
    """Partner Center's ProductUpgradesStatus document."""

    id: str
    product_family: str | None
    status: str
    line_items: tuple[UpgradesLineItem, ...] = field(default_factory=tuple)
    error_details: ErrorDetails | None = None

    @property
    def is_running(self) -> bool:
        """Not ended: only the known final statuses end an upgrade; any other value is followed as running."""
        return self.status.strip().lower() not in ENDED_STATUSES

    @property
    def is_completed(self) -> bool:
        """Partner Center says the upgrade succeeded (at the top; see :attr:`is_partial` for its line items)."""
        return self.status.strip().lower() in COMPLETED_STATUSES

    @property
    def is_partial(self) -> bool:
        """Completed at the top, yet a line item (one subscription) has a non-success status or error details:
        some subscriptions stayed on the legacy offer."""
        return self.is_completed and any(item.not_upgraded for item in self.line_items)

    @classmethod
    def from_json(cls, data: JSONObject, upgrade_id: str) -> ProductUpgradesStatus:
        """Partner Center's document; without a ``status`` it is malformed (not "ended"): a 502 upstream."""
        status = data.get("status")
        if not isinstance(status, str) or not status.strip():
            raise UpstreamUnavailableError(f"Partner Center's status document for upgrade {upgrade_id} has no status")
        _warn_if_unknown(status)
        items = data.get("lineItems")
        return cls(
            id=_str_or(data.get("id"), upgrade_id),
            product_family=_str_or_none(data.get("productFamily")),
            status=status,
            line_items=tuple(UpgradesLineItem.from_json(item) for item in items) if isinstance(items, list) else (),
            error_details=ErrorDetails.from_json(data.get("errorDetails")),
        )

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "productFamily": self.product_family,
            "status": self.status,
            "lineItems": [item.to_json() for item in self.line_items],
            "errorDetails": self.error_details.to_json() if self.error_details else None,
        }


@dataclass(frozen=True)
class CustomerCompanyProfile:
    """A customer's ``companyProfile`` as the customer list gives it."""

    tenant_id: str | None
    domain: str | None
    company_name: str | None

    @classmethod
    def from_json(cls, data: object) -> CustomerCompanyProfile:
        obj: JSONObject = data if isinstance(data, dict) else {}
        return cls(
            tenant_id=_text(obj.get("tenantId")),
            domain=_text(obj.get("domain")),
            company_name=_text(obj.get("companyName")),
        )


@dataclass(frozen=True)
class Customer:
    """One item of Partner Center's customer list (``GET /v1/customers``): the tenant id and its company profile."""

    id: str
    company_profile: CustomerCompanyProfile

    @classmethod
    def from_json(cls, data: object) -> Customer | None:
        """None for an item without an ``id``: there is nothing to ask Partner Center about."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"].strip():
            return None
        return cls(id=data["id"].strip(), company_profile=CustomerCompanyProfile.from_json(data.get("companyProfile")))


@dataclass(frozen=True)
class Subscription:
    """One of a customer's subscriptions (``GET /v1/customers/{id}/subscriptions``): what discovery looks at."""

    id: str | None
    offer_id: str | None
    offer_name: str | None
    friendly_name: str | None
    quantity: int | None
    #: ``active``, ``suspended``, ``deleted``... as Partner Center spells it (compare case-insensitively).
    status: str | None

    @classmethod
    def from_json(cls, data: object) -> Subscription:
        obj: JSONObject = data if isinstance(data, dict) else {}
        quantity = obj.get("quantity")
        return cls(
            id=_str_or_none(obj.get("id")),
            offer_id=_str_or_none(obj.get("offerId")),
            offer_name=_text(obj.get("offerName")),
            friendly_name=_text(obj.get("friendlyName")),
            quantity=quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None,
            status=_str_or_none(obj.get("status")),
        )


def _warn_if_unknown(status: str) -> None:
    """A status this app does not know is followed as running; say so once per value and process."""
    value = status.strip()
    if value.lower() in RUNNING_STATUSES or value.lower() in ENDED_STATUSES:
        return
    with _warned_lock:
        if value in _warned_statuses or len(_warned_statuses) >= _MAX_WARNED:
            return
        _warned_statuses.add(value)
    log.warning(
        "Partner Center reported the upgrade status %r, which this app does not know; "
        "following it as running (until it ends or tracking expires)",
        value[:64],
    )


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    return str(value)


def _text(value: object) -> str | None:
    """A description-like field: a non-empty string, cut to :data:`MAX_DESCRIPTION`; anything else None."""
    return value[:MAX_DESCRIPTION] if isinstance(value, str) and value else None


def _str_or(value: object, default: str) -> str:
    return default if value is None or value == "" else str(value)
