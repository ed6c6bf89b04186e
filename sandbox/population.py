"""A seeded population of customers for the sandbox's customer list, which knows its own truth.

``python -m sandbox --customers N`` (default 1,000) lists N customers: the scripted customers 0001-0011
(:mod:`sandbox.customers`) first, then customers built from a seed in these shares:

=====================  =====  ==========================================================================
kind                   share  subscriptions
=====================  =====  ==========================================================================
``legacy``              40 %  1-3 active legacy Azure (``MS-AZR-0145P``), sometimes the Azure plan or Microsoft 365 too
``legacy_suspended``     3 %  one active and one suspended legacy Azure subscription
``suspended_only``       5 %  legacy Azure suspended (the customer has moved: its Azure plan is active)
``deleted_legacy``       2 %  a deleted legacy Azure subscription and the Azure plan
``azure_plan``          25 %  only the Azure plan (offer ``DZH318Z0BPS6:0001:DZH318Z0BML6``), maybe Microsoft 365
``no_azure``            25 %  no Azure at all (Microsoft 365, or nothing)
=====================  =====  ==========================================================================

Beside its kind, 1 % of the built customers have a subscriptions call that fails once (a ``503``, or a ``429`` with
``Retry-After: 1``) and then answers, and 0.5 % cannot be read at all (``403`` ``20002``, no commerce relationship).
A few company names look like spreadsheet formulas (``=HYPERLINK(...)``, ``+``, ``-``, ``@``, a tab), one holds a
comma and quotes; a few offer ids and statuses are spelled in another case. The upgrade calls answer as the kind
says (legacy: eligible; a suspended legacy subscription: ``900105``; moved: ``900110``; no legacy: ``900108``),
then the scripted customers' own behaviour on top.

:class:`Population` says who discovery should keep, and why, so a test counts a run against it.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sandbox.constants import ALREADY_UPGRADED_REASON
from sandbox.customers import (
    ALREADY_UPGRADED,
    CANCELLED_UPGRADE,
    ELIGIBLE,
    FAILING_UPGRADE,
    NOT_ELIGIBLE,
    NOT_ELIGIBLE_REASON,
    PARTIAL_UPGRADE,
    PRIVILEGES_REFUSED_ONCE,
    SCRIPTED_CUSTOMERS,
    THROTTLED,
    THROTTLED_TWICE,
    TRY_LATER,
    UNKNOWN_STATE,
    script_customers,
)
from sandbox.directory import AZURE_PLAN_OFFER_ID, LEGACY_AZURE_OFFER_ID, NO_RELATIONSHIP_CODE
from sandbox.partner_center import FakePartnerCenter

DEFAULT_CUSTOMERS = 1000
DEFAULT_SEED = 2027

#: Kinds and their shares of the built customers (``no_azure`` takes what rounding leaves).
SHARES: tuple[tuple[str, float], ...] = (
    ("legacy", 0.40),
    ("legacy_suspended", 0.03),
    ("suspended_only", 0.05),
    ("deleted_legacy", 0.02),
    ("azure_plan", 0.25),
    ("no_azure", 0.25),
)
FAIL_ONCE_SHARE = 0.01
UNREADABLE_SHARE = 0.005

#: What discovery makes of each kind: kept (an active legacy subscription), suspendedOnly, or not legacy.
VERDICTS = {
    "legacy": "kept",
    "legacy_suspended": "kept",
    "suspended_only": "suspendedOnly",
    "deleted_legacy": "notLegacy",
    "azure_plan": "notLegacy",
    "no_azure": "notLegacy",
}

#: The scripted customers' kinds: subscriptions that agree with what their upgrade calls answer.
SCRIPTED_KINDS = {
    ELIGIBLE: "legacy",
    NOT_ELIGIBLE: "azure_plan",
    ALREADY_UPGRADED: "suspended_only",
    TRY_LATER: "legacy",
    THROTTLED: "legacy",
    FAILING_UPGRADE: "legacy",
    THROTTLED_TWICE: "legacy",
    UNKNOWN_STATE: "legacy",
    PARTIAL_UPGRADE: "legacy",
    PRIVILEGES_REFUSED_ONCE: "legacy",
    CANCELLED_UPGRADE: "legacy",
}

#: Company names a spreadsheet would run as formulas, given to built legacy customers (so they are written).
FORMULA_NAMES = (
    '=HYPERLINK("https://example.invalid/","open me")',
    "+44 Consulting",
    "-minus Trading",
    "@mention Labs",
    "\tTabbed Industries",
)
QUOTED_NAME = 'Contoso, "The Best" Ltd'

SUSPENDED_REASON = (
    "The customer has a suspended Microsoft Azure (MS-AZR-0145P) subscription; reactivate or cancel it first."
)

_PREFIXES = ("Contoso", "Fabrikam", "Northwind", "Tailspin", "Woodgrove", "Litware", "Adatum", "Proseware")
_SUFFIXES = ("Ltd", "GmbH", "Inc", "SA", "BV", "AB", "Oy", "Pty")
_M365 = ("CFQ7TTC0LH18:0001:CFQ7TTC0LH18", "Microsoft 365 Business Basic")


@dataclass(frozen=True)
class PopulationCustomer:
    customer_id: str
    company_name: str
    domain: str
    kind: str
    subscriptions: tuple[dict[str, Any], ...]
    #: ``fail_once_503``, ``fail_once_429``, ``unreadable`` or None.
    fault: str | None = None

    @property
    def verdict(self) -> str:
        """What discovery should make of the customer: ``kept``, ``suspendedOnly``, ``notLegacy``, ``unreadable``."""
        return "unreadable" if self.fault == "unreadable" else VERDICTS[self.kind]

    @property
    def needs_action(self) -> bool:
        return self.verdict == "kept" and self.kind == "legacy_suspended"

    @property
    def legacy_active(self) -> int:
        return sum(
            1
            for s in self.subscriptions
            if s["offerId"].upper() == LEGACY_AZURE_OFFER_ID and s["status"].lower() == "active"
        )


@dataclass(frozen=True)
class Population:
    seed: int
    customers: tuple[PopulationCustomer, ...]

    @classmethod
    def build(
        cls, size: int = DEFAULT_CUSTOMERS, *, seed: int = DEFAULT_SEED, scripted: bool = True, failing: bool = True
    ) -> Population:
        """``size`` customers: the scripted ones first (unless ``scripted`` is False), then built ones (with no
        failing subscriptions call when ``failing`` is False: a benchmark's steady pace)."""
        rng = random.Random(seed)
        head = [_scripted(c.customer_id, rng) for c in SCRIPTED_CUSTOMERS][: size if scripted else 0]
        built = max(0, size - len(head))
        kinds = _kinds(built)
        rng.shuffle(kinds)
        faults: list[str | None] = [None] * built
        picks = rng.sample(range(built), _share(built, FAIL_ONCE_SHARE) + _share(built, UNREADABLE_SHARE))
        picks = picks if failing else []
        for n, index in enumerate(picks):
            fail_once = n < _share(built, FAIL_ONCE_SHARE)
            faults[index] = ("fail_once_503" if n % 2 == 0 else "fail_once_429") if fail_once else "unreadable"
        legacy_readable = [i for i, kind in enumerate(kinds) if kind == "legacy" and faults[i] is None]
        odd_names = dict(zip(legacy_readable, (*FORMULA_NAMES, QUOTED_NAME), strict=False))
        tail = [_built(index, kinds[index], faults[index], odd_names.get(index), rng) for index in range(built)]
        return cls(seed, tuple(head + tail))

    def install(self, partner_center: FakePartnerCenter) -> None:
        """List every customer on ``partner_center`` with its subscriptions, faults and upgrade answers."""
        for customer in self.customers:
            directory = partner_center.directory
            directory.add_customer(
                customer.customer_id, customer.company_name, customer.domain, list(customer.subscriptions)
            )
            if customer.fault == "fail_once_503":
                directory.fail_subscriptions(
                    customer.customer_id, 503, code="503", description="The service is temporarily unavailable."
                )
            elif customer.fault == "fail_once_429":
                directory.fail_subscriptions(customer.customer_id, 429, retry_after="1")
            elif customer.fault == "unreadable":
                directory.fail_subscriptions(
                    customer.customer_id,
                    403,
                    times=None,
                    code=NO_RELATIONSHIP_CODE,
                    description=f"Partner has no commerce relationship with customer ID {customer.customer_id}.",
                )
            _answer_upgrades_as_kind(partner_center, customer)
        script_customers(partner_center)

    # -- the truth ---------------------------------------------------------------------------------------
    def ids(self, *verdicts: str) -> set[str]:
        return {c.customer_id for c in self.customers if c.verdict in verdicts}

    @property
    def kept(self) -> set[str]:
        return self.ids("kept")

    @property
    def needs_action(self) -> set[str]:
        return {c.customer_id for c in self.customers if c.needs_action}

    @property
    def eligible(self) -> set[str]:
        """Kept customers whose eligibility call says ``isEligible: true`` (a scripted refusal or throttle aside)."""
        refused = {TRY_LATER, THROTTLED}  # 403 900130, and 429 on every call
        return {c for c in self.kept - self.needs_action if c not in refused}

    def by_id(self) -> dict[str, PopulationCustomer]:
        return {c.customer_id: c for c in self.customers}

    def counts(self) -> Counter[str]:
        return Counter(c.verdict for c in self.customers)

    def summary(self) -> str:
        counts = self.counts()
        faults = Counter(c.fault for c in self.customers if c.fault)
        return (
            f"Customer list: {len(self.customers)} customers (seed {self.seed}): {counts['kept']} with active legacy "
            f"Azure ({len(self.needs_action)} also suspended), {counts['suspendedOnly']} legacy suspended only, "
            f"{counts['notLegacy']} without legacy Azure, {counts['unreadable']} whose subscriptions cannot be read "
            f"(403), {faults['fail_once_503'] + faults['fail_once_429']} whose subscriptions call fails once"
        )


def _share(total: int, share: float) -> int:
    return round(total * share)


def _kinds(total: int) -> list[str]:
    kinds: list[str] = []
    for kind, share in SHARES[:-1]:
        kinds += [kind] * _share(total, share)
    return (kinds + [SHARES[-1][0]] * total)[:total]


def _subscription(rng: random.Random, offer_id: str, offer_name: str, status: str) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "offerId": offer_id,
        "offerName": offer_name,
        "friendlyName": offer_name,
        "quantity": 1,
        "unitType": "none",
        "status": status,
        "autoRenewEnabled": False,
        "billingType": "usage",
        "contractType": "subscription",
    }


def _subscriptions(kind: str, rng: random.Random) -> list[dict[str, Any]]:
    def legacy(status: str) -> dict[str, Any]:
        # A few spelled in other cases: the offer id and the status compare case-insensitively.
        offer = LEGACY_AZURE_OFFER_ID.lower() if rng.random() < 0.1 else LEGACY_AZURE_OFFER_ID
        return _subscription(rng, offer, "Microsoft Azure", status.title() if rng.random() < 0.1 else status)

    plan = _subscription(rng, AZURE_PLAN_OFFER_ID, "Azure plan", "active")
    m365 = [_subscription(rng, *_M365, "active")] if rng.random() < 0.5 else []
    if kind == "legacy":
        extra = [plan] if rng.random() < 0.2 else []
        return [legacy("active") for _ in range(rng.randint(1, 3))] + extra + m365
    if kind == "legacy_suspended":
        return [legacy("active"), legacy("suspended")]
    if kind == "suspended_only":
        return [legacy("suspended") for _ in range(rng.randint(1, 2))] + [plan]
    if kind == "deleted_legacy":
        return [legacy("deleted"), plan]
    if kind == "azure_plan":
        return [plan] + m365
    return m365


def _scripted(customer_id: str, rng: random.Random) -> PopulationCustomer:
    kind = SCRIPTED_KINDS[customer_id]
    n = int(customer_id[-4:])
    return PopulationCustomer(
        customer_id,
        f"Sandbox scripted {n:04d}",
        f"scripted{n:04d}.onmicrosoft.com",
        kind,
        tuple(_subscriptions(kind, rng)),
    )


def _built(index: int, kind: str, fault: str | None, name: str | None, rng: random.Random) -> PopulationCustomer:
    customer_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    company = name or f"{rng.choice(_PREFIXES)} {index + 1:05d} {rng.choice(_SUFFIXES)}"
    domain = f"customer{index + 1:05d}.onmicrosoft.com"
    return PopulationCustomer(customer_id, company, domain, kind, tuple(_subscriptions(kind, rng)), fault)


def _answer_upgrades_as_kind(partner_center: FakePartnerCenter, customer: PopulationCustomer) -> None:
    """The product-upgrade calls agree with the subscriptions (through the fake's ordinary controls)."""
    if customer.kind == "legacy_suspended":
        partner_center.set_ineligible(customer.customer_id, SUSPENDED_REASON, create_status=403, create_code=900105)
    elif customer.kind == "suspended_only":
        partner_center.set_ineligible(
            customer.customer_id, ALREADY_UPGRADED_REASON, create_status=400, create_code=900110
        )
    elif VERDICTS[customer.kind] == "notLegacy":
        partner_center.set_ineligible(customer.customer_id, NOT_ELIGIBLE_REASON, create_status=403, create_code=900108)
