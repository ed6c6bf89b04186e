"""Which product-upgrade operation a call is, and which customer it is about.

Paths are matched case-insensitively, as the real service does; every operation is a POST whose JSON body names
the customer (a GUID) and the product family (``Azure``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.partner_center.replies import PartnerCenterError
from sandbox.server import RecordedRequest

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
STATUS_PATH = re.compile(r"^/v1/productupgrades/([^/]+)/status/?$", re.IGNORECASE)
CREATE_PATH = re.compile(r"^/v1/productupgrades/?$", re.IGNORECASE)
ELIGIBILITY_PATH = re.compile(r"^/v1/productupgrades/eligibility/?$", re.IGNORECASE)


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


@dataclass(frozen=True)
class Operation:
    """``create``, ``eligibility`` or ``status`` (of ``upgrade_id``)."""

    name: str
    upgrade_id: str = ""


def operation(path: str) -> Operation | None:
    """The operation ``path`` names, or None for a path that is none of them."""
    if CREATE_PATH.match(path):
        return Operation("create")
    if ELIGIBILITY_PATH.match(path):
        return Operation("eligibility")
    if (status := STATUS_PATH.match(path)) is not None:
        return Operation("status", status.group(1))
    return None


def is_create_post(req: RecordedRequest) -> bool:
    return req.method == "POST" and bool(CREATE_PATH.match(req.path))


def subject(req: RecordedRequest) -> tuple[str, str]:
    """The call's customer id and product family, from its JSON body; raises Partner Center's 400 when invalid."""
    try:
        body = req.json()
    except ValueError:
        raise PartnerCenterError(400, 400056, "Invalid input: the request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise PartnerCenterError(400, 400056, "Invalid input: the request body must be a JSON object.")
    customer_id = body.get("customerId")
    product_family = body.get("productFamily")
    if not is_guid(customer_id):
        raise PartnerCenterError(400, 900118, f"The customer id '{customer_id}' is invalid.")
    if not isinstance(product_family, str) or product_family.lower() != "azure":
        raise PartnerCenterError(400, 400056, f"Invalid input: productFamily '{product_family}' is not valid.")
    assert isinstance(customer_id, str)
    return customer_id, product_family
