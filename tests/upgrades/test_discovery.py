"""Who discovery keeps, from a customer's subscriptions: the rule, table by table."""

from __future__ import annotations

import pytest

from shared.models import Subscription
from shared.upgrades.discovery import (
    KEPT,
    NEEDS_ACTION_ALL_SUSPENDED,
    NEEDS_ACTION_SUSPENDED,
    NOT_LEGACY,
    SUSPENDED_ONLY,
    candidacy,
)

PLAN = "DZH318Z0BPS6:0001:DZH318Z0BML6"


def subscriptions(*pairs: tuple[str, str]) -> list[Subscription]:
    return [
        Subscription.from_json({"id": f"s{n}", "offerId": offer, "status": status})
        for n, (offer, status) in enumerate(pairs)
    ]


@pytest.mark.parametrize(
    ("held", "verdict", "legacy", "needs_action", "written", "written_with_suspended"),
    [
        ([("MS-AZR-0145P", "active")], KEPT, 1, None, True, True),
        ([("ms-azr-0145p", "Active")], KEPT, 1, None, True, True),  # any case
        ([(" MS-AZR-0145P ", "ACTIVE ")], KEPT, 1, None, True, True),
        ([("MS-AZR-0145P", "active"), ("MS-AZR-0145P", "active"), (PLAN, "active")], KEPT, 2, None, True, True),
        ([("MS-AZR-0145P", "active"), ("MS-AZR-0145P", "suspended")], KEPT, 1, NEEDS_ACTION_SUSPENDED, True, True),
        ([("MS-AZR-0145P", "suspended"), (PLAN, "active")], SUSPENDED_ONLY, 0, NEEDS_ACTION_ALL_SUSPENDED, False, True),
        (
            [("MS-AZR-0145P", "Suspended"), ("MS-AZR-0145P", "suspended")],
            SUSPENDED_ONLY,
            0,
            NEEDS_ACTION_ALL_SUSPENDED,
            False,
            True,
        ),
        ([(PLAN, "active")], NOT_LEGACY, 0, None, False, False),
        ([("MS-AZR-0145P", "deleted"), (PLAN, "active")], NOT_LEGACY, 0, None, False, False),
        ([("MS-AZR-0145P", "pending")], NOT_LEGACY, 0, None, False, False),
        (
            [("MS-AZR-0145P", "deleted"), ("MS-AZR-0145P", "suspended")],
            SUSPENDED_ONLY,
            0,
            NEEDS_ACTION_ALL_SUSPENDED,
            False,
            True,
        ),
        ([("MS-AZR-0145P-X", "active"), ("MS-AZR-0017P", "active")], NOT_LEGACY, 0, None, False, False),
        ([], NOT_LEGACY, 0, None, False, False),
    ],
)
def test_candidate_rule(held, verdict, legacy, needs_action, written, written_with_suspended) -> None:
    found = candidacy(subscriptions(*held))
    assert (found.verdict, found.legacy_subscriptions, found.needs_action) == (verdict, legacy, needs_action)
    assert found.written(include_suspended=False) is written
    assert found.written(include_suspended=True) is written_with_suspended


def test_a_subscription_without_offer_or_status_is_not_legacy() -> None:
    found = candidacy([Subscription.from_json({}), Subscription.from_json({"offerId": "MS-AZR-0145P"})])
    assert found.verdict == NOT_LEGACY and found.legacy_subscriptions == 0
