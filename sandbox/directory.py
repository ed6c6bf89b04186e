"""The fake Partner Center's customer list and each customer's subscriptions, paged as Partner Center pages them.

``GET /v1/customers?size=N`` answers the first ``N`` customers (at most 500 a page) and, while more follow,
``links.next`` = ``{"uri": "/v1/customers?size=N&seekOperation=Next", "method": "GET", "headers": [{"key":
"MS-ContinuationToken", "value": <opaque>}]}``; that uri with that header answers the next page; the last page
has no ``next``. ``GET /v1/customers/{id}/subscriptions`` answers every subscription of the customer in one
collection, as Microsoft's "Get a customer's subscriptions" page shows it (no paging).

This module keeps the state and decides the answers; :class:`sandbox.partner_center.FakePartnerCenter` puts them
on the wire (authentication, Partner Center's headers and error bodies).
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from sandbox.constants import TENANT_ID

CUSTOMERS_PATH = re.compile(r"^/v1/customers/?$", re.IGNORECASE)
SUBSCRIPTIONS_PATH = re.compile(r"^/v1/customers/([^/]+)/subscriptions/?$", re.IGNORECASE)

#: Customers one page holds at most (Partner Center's PowerShell module: "the maximum number of customers returned
#: by the Partner Center API in a single call is 500"); a larger ``size`` is cut to it.
MAX_PAGE_SIZE = 500
CONTINUATION_HEADER = "MS-ContinuationToken"

#: Legacy Azure (pay-as-you-go CSP), and the Azure plan's subscription offer id as Partner Center's Azure
#: spending pages show it.
LEGACY_AZURE_OFFER_ID = "MS-AZR-0145P"
AZURE_PLAN_OFFER_ID = "DZH318Z0BPS6:0001:DZH318Z0BML6"

#: Partner Center's "Partner ID {0} has no commerce relationship with customer ID {1}" (REST error codes page).
NO_RELATIONSHIP_CODE = "20002"
INVALID_INPUT_CODE = "400056"


class DirectoryError(Exception):
    """An error answer: ``status`` with Partner Center's ``code`` and ``description`` (or a throttle)."""

    def __init__(self, status: int, code: str | None, description: str, retry_after: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.retry_after = retry_after


@dataclass
class DirectoryCustomer:
    customer_id: str
    company_name: str
    domain: str
    #: Partner Center's subscription resources (``id``, ``offerId``, ``offerName``, ``status``...).
    subscriptions: list[dict[str, Any]] = field(default_factory=list)

    def as_item(self) -> dict[str, Any]:
        return {
            "id": self.customer_id,
            "companyProfile": {
                "tenantId": self.customer_id,
                "domain": self.domain,
                "companyName": self.company_name,
                "attributes": {"objectType": "CustomerCompanyProfile"},
            },
            "relationshipToPartner": "reseller",
            "attributes": {"objectType": "Customer"},
        }


@dataclass
class SubscriptionFault:
    """How a customer's subscriptions call fails: ``remaining`` more times (None: every time)."""

    status: int
    code: str | None
    description: str
    retry_after: str | None
    remaining: int | None


@dataclass
class _Continuation:
    offset: int
    size: int


class CustomerDirectory:
    """The partner's customers in listing order, their subscriptions, and the continuations handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._customers: dict[str, DirectoryCustomer] = {}
        self._faults: dict[str, SubscriptionFault] = {}
        self._continuations: dict[str, _Continuation] = {}

    # -- control ---------------------------------------------------------------------------------------
    def add_customer(
        self, customer_id: str, company_name: str, domain: str, subscriptions: list[dict[str, Any]] | None = None
    ) -> None:
        """List the customer (after those added before) with these subscriptions."""
        with self._lock:
            self._customers[customer_id.lower()] = DirectoryCustomer(
                customer_id, company_name, domain, list(subscriptions or [])
            )

    def fail_subscriptions(
        self,
        customer_id: str,
        status: int,
        *,
        times: int | None = 1,
        code: str | None = None,
        description: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """The customer's subscriptions call answers ``status`` the next ``times`` times (None: always)."""
        with self._lock:
            self._faults[customer_id.lower()] = SubscriptionFault(
                status, code, description or f"Error {status} reading subscriptions.", retry_after, times
            )

    def clear_subscription_fault(self, customer_id: str) -> None:
        with self._lock:
            self._faults.pop(customer_id.lower(), None)

    def clear(self) -> None:
        with self._lock:
            self._customers.clear()
            self._faults.clear()
            self._continuations.clear()

    @property
    def customer_ids(self) -> list[str]:
        with self._lock:
            return [customer.customer_id for customer in self._customers.values()]

    # -- answers ---------------------------------------------------------------------------------------
    def customers_page(self, query: dict[str, str], continuation: str | None) -> dict[str, Any]:
        """The body of ``GET /v1/customers``: the first page (``size``), or the one a continuation points at."""
        seek = query.get("seekOperation")
        with self._lock:
            if seek is None:
                offset, size = 0, _page_size(query.get("size"))
            elif seek.lower() != "next":
                raise DirectoryError(
                    400, INVALID_INPUT_CODE, f"Invalid input: seekOperation '{seek}' is not supported."
                )
            else:
                state = self._continuations.get(continuation or "")
                if state is None:
                    raise DirectoryError(
                        400, INVALID_INPUT_CODE, f"Invalid input: a valid {CONTINUATION_HEADER} header is required."
                    )
                offset, size = state.offset, state.size
            customers = list(self._customers.values())
            page = customers[offset : offset + size]
            links: dict[str, Any] = {"self": {"uri": f"/v1/customers?size={size}", "method": "GET", "headers": []}}
            if offset + size < len(customers):
                token = secrets.token_urlsafe(24)
                self._continuations[token] = _Continuation(offset + size, size)
                links["next"] = {
                    "uri": f"/v1/customers?size={size}&seekOperation=Next",
                    "method": "GET",
                    "headers": [{"key": CONTINUATION_HEADER, "value": token}],
                }
        return {
            "totalCount": len(page),
            "items": [customer.as_item() for customer in page],
            "links": links,
            "attributes": {"objectType": "Collection"},
        }

    def subscriptions(self, raw_customer_id: str) -> dict[str, Any]:
        """The body of ``GET /v1/customers/{id}/subscriptions``, or the customer's scripted failure."""
        customer_id = unquote(raw_customer_id)
        with self._lock:
            fault = self._faults.get(customer_id.lower())
            if fault is not None:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        del self._faults[customer_id.lower()]
                raise DirectoryError(fault.status, fault.code, fault.description, fault.retry_after)
            customer = self._customers.get(customer_id.lower())
            if customer is None:
                raise DirectoryError(
                    403,
                    NO_RELATIONSHIP_CODE,
                    f"Partner ID {TENANT_ID} has no commerce relationship with customer ID {customer_id}.",
                )
            items = [
                {**subscription, "attributes": {"objectType": "Subscription"}}
                for subscription in customer.subscriptions
            ]
        return {"totalCount": len(items), "items": items, "attributes": {"objectType": "Collection"}}


def _page_size(value: str | None) -> int:
    """``size`` is required (Microsoft's page marks it so): a whole number of at least 1, cut to 500."""
    try:
        size = int(value or "")
    except ValueError:
        raise DirectoryError(400, INVALID_INPUT_CODE, "Invalid input: size must be a whole number.") from None
    if size < 1:
        raise DirectoryError(400, INVALID_INPUT_CODE, "Invalid input: size must be at least 1.")
    return min(size, MAX_PAGE_SIZE)
