"""Who discovery keeps: from a customer's subscriptions, whether it is still on legacy Azure (a pure rule).

- kept: at least one ``active`` legacy Azure subscription (offer id ``MS-AZR-0145P``, any case);
- ``suspendedOnly``: legacy subscriptions, all of them ``suspended``: most likely moved already (Partner Center
  suspends the old subscription after a transition) or blocked. Written only when asked for;
- a kept customer that also holds a ``suspended`` legacy subscription needs action first: Partner Center refuses
  to move a customer with a suspended Azure subscription (900105);
- anything else (only the Azure plan, no Azure, legacy subscriptions deleted or pending) is not a candidate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.models import Subscription

#: Legacy Azure: the pay-as-you-go CSP offer that product upgrades move to the Azure plan.
LEGACY_AZURE_OFFER_ID = "MS-AZR-0145P"

KEPT = "kept"
SUSPENDED_ONLY = "suspendedOnly"
NOT_LEGACY = "notLegacy"

NEEDS_ACTION_SUSPENDED = "a legacy Azure subscription is suspended: reactivate or cancel it first (900105)"
NEEDS_ACTION_ALL_SUSPENDED = "every legacy Azure subscription is suspended: most likely moved already, or blocked"


@dataclass(frozen=True)
class Candidacy:
    """What a customer's subscriptions say about its upgrade."""

    verdict: str
    #: Active legacy Azure subscriptions (the ones an upgrade moves).
    legacy_subscriptions: int
    suspended_legacy_subscriptions: int

    @property
    def needs_action(self) -> str | None:
        """Why a written customer needs a person before its upgrade, or None."""
        if self.verdict == SUSPENDED_ONLY:
            return NEEDS_ACTION_ALL_SUSPENDED
        if self.verdict == KEPT and self.suspended_legacy_subscriptions:
            return NEEDS_ACTION_SUSPENDED
        return None

    def written(self, *, include_suspended: bool) -> bool:
        """Whether the customer goes into the candidates CSV."""
        return self.verdict == KEPT or (include_suspended and self.verdict == SUSPENDED_ONLY)


def is_legacy_azure(subscription: Subscription) -> bool:
    return (subscription.offer_id or "").strip().upper() == LEGACY_AZURE_OFFER_ID


def candidacy(subscriptions: Iterable[Subscription]) -> Candidacy:
    """The rule above, over every subscription of one customer."""
    statuses = [(s.status or "").strip().lower() for s in subscriptions if is_legacy_azure(s)]
    active, suspended = statuses.count("active"), statuses.count("suspended")
    if active:
        verdict = KEPT
    elif suspended:
        verdict = SUSPENDED_ONLY
    else:
        verdict = NOT_LEGACY
    return Candidacy(verdict, active, suspended)
