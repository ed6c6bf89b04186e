"""Customers whose behaviour is scripted by id, so every path of the app can be tried locally.

The ids are fixed and easy to type: ``00000000-0000-0000-0000-00000000000N``. Any other GUID is an ordinary
eligible customer. The "Sandbox customers" table of docs/sandbox.md lists the same rows (a test keeps them in step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandbox.constants import ALREADY_UPGRADED_REASON
from sandbox.partner_center import FakePartnerCenter, LineOutcome


def _id(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


ELIGIBLE = _id(1)
NOT_ELIGIBLE = _id(2)
ALREADY_UPGRADED = _id(3)
TRY_LATER = _id(4)
THROTTLED = _id(5)
FAILING_UPGRADE = _id(6)
THROTTLED_TWICE = _id(7)
UNKNOWN_STATE = _id(8)
PARTIAL_UPGRADE = _id(9)
PRIVILEGES_REFUSED_ONCE = _id(10)
CANCELLED_UPGRADE = _id(11)

#: A status value Partner Center does not document (it publishes no list of states): the app follows it as running.
UNKNOWN_STATUS = "Validating"

#: Seconds Partner Center asks a throttled caller to wait (the docs' example is 57).
THROTTLED_RETRY_AFTER = "30"

NOT_ELIGIBLE_REASON = "The customer has no Microsoft Azure (MS-AZR-0145P) subscription to upgrade."
TRY_LATER_DESCRIPTION = (
    "One or more Azure subscriptions were purchased recently for this customer; please try again later."
)
#: Partner Center documents no codes for a failed upgrade's status; 900114 is its code for "failed upgrade".
FAILED_ERROR_DETAILS = {
    "code": "900114",
    "description": "The upgrade failed: the Microsoft Azure subscription could not be moved to the Azure plan.",
}


#: The failed subscription of a partial upgrade.
PARTIAL_ERROR_DETAILS = {
    "code": "900114",
    "description": "The subscription could not be moved to the Azure plan; it stays on Microsoft Azure (MS-AZR-0145P).",
}
INSUFFICIENT_PRIVILEGES_DESCRIPTION = (
    "Insufficient privileges: the signed-in user does not have the Partner Center role this operation requires."
)


@dataclass(frozen=True)
class ScriptedCustomer:
    customer_id: str
    #: Short name, as in the docs' table.
    behaviour: str
    #: What Partner Center (the sandbox) answers.
    answers: str
    script: Callable[[FakePartnerCenter, str], None]


def _eligible(pc: FakePartnerCenter, customer_id: str) -> None:
    pass  # every unscripted customer behaves so


def _not_eligible(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_ineligible(customer_id, NOT_ELIGIBLE_REASON, create_status=403, create_code=900108)


def _already_upgraded(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_ineligible(customer_id, ALREADY_UPGRADED_REASON, create_status=400, create_code=900110)


def _try_later(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_customer_error(customer_id, 403, 900130, TRY_LATER_DESCRIPTION, operations=("create", "eligibility"))


def _throttled(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.throttle_customer(customer_id, THROTTLED_RETRY_AFTER)


def _throttled_twice(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.throttle_customer(customer_id, "1", calls=2)


def _failing_upgrade(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_outcome(
        customer_id, "Failed", error_details=FAILED_ERROR_DETAILS, line_item_error_details=FAILED_ERROR_DETAILS
    )


def _unknown_state(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_interim_status(customer_id, UNKNOWN_STATUS)


def _partial_upgrade(pc: FakePartnerCenter, customer_id: str) -> None:
    lines = (LineOutcome("Completed"), LineOutcome("Failed", PARTIAL_ERROR_DETAILS))
    pc.set_outcome(customer_id, "Completed", line_items=lines)


def _privileges_refused_once(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_customer_error(
        customer_id, 403, 900308, INSUFFICIENT_PRIVILEGES_DESCRIPTION, operations=("status",), times=1
    )


def _cancelled_upgrade(pc: FakePartnerCenter, customer_id: str) -> None:
    pc.set_outcome(customer_id, "Cancelled")


SCRIPTED_CUSTOMERS: tuple[ScriptedCustomer, ...] = (
    ScriptedCustomer(
        ELIGIBLE,
        "eligible",
        "eligibility `isEligible: true`; create `202`; status `InProgress`, then `Completed` after the delay",
        _eligible,
    ),
    ScriptedCustomer(
        NOT_ELIGIBLE,
        "not eligible",
        "eligibility `isEligible: false` with a reason; create `403` `900108`",
        _not_eligible,
    ),
    ScriptedCustomer(
        ALREADY_UPGRADED,
        "already upgraded",
        "eligibility `isEligible: false` with a reason; create `400` `900110`",
        _already_upgraded,
    ),
    ScriptedCustomer(
        TRY_LATER,
        "try later",
        "eligibility and create `403` `900130` (subscriptions purchased recently)",
        _try_later,
    ),
    ScriptedCustomer(
        THROTTLED,
        "throttled",
        f"every call `429` with `Retry-After: {THROTTLED_RETRY_AFTER}`",
        _throttled,
    ),
    ScriptedCustomer(
        FAILING_UPGRADE,
        "failing upgrade",
        "create `202`; status `InProgress`, then `Failed` with `errorDetails` after the delay",
        _failing_upgrade,
    ),
    ScriptedCustomer(
        THROTTLED_TWICE,
        "throttled twice",
        "the first two calls `429` with `Retry-After: 1`, then as eligible",
        _throttled_twice,
    ),
    ScriptedCustomer(
        UNKNOWN_STATE,
        "unknown state",
        f"create `202`; status `{UNKNOWN_STATUS}` (a state the app does not know), then `Completed` after the delay",
        _unknown_state,
    ),
    ScriptedCustomer(
        PARTIAL_UPGRADE,
        "partial upgrade",
        "create `202`; two subscriptions; status `InProgress`, then `Completed` with one line item `Failed` "
        "with `errorDetails`",
        _partial_upgrade,
    ),
    ScriptedCustomer(
        PRIVILEGES_REFUSED_ONCE,
        "privileges refused once",
        "create `202`; the first status call `403` `900308` (insufficient privileges), then as eligible",
        _privileges_refused_once,
    ),
    ScriptedCustomer(
        CANCELLED_UPGRADE,
        "cancelled upgrade",
        "create `202`; status `InProgress`, then `Cancelled` after the delay",
        _cancelled_upgrade,
    ),
)


def script_customers(partner_center: FakePartnerCenter) -> None:
    """Give the scripted customers their behaviour on ``partner_center`` (through its ordinary controls)."""
    for customer in SCRIPTED_CUSTOMERS:
        customer.script(partner_center, customer.customer_id)
