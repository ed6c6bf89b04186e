"""After a queued request's attempt failed: retry, defer or final, decided from a table of real errors.

The errors are the package's own, built as the client builds them from Partner Center's answers, so each row
also checks :meth:`Failure.of` reads them as the queue adapter does.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import (
    MissingSettingError,
    NotEligibleError,
    PartnerCenterError,
    ProductUpgradeError,
    StorageUnavailableError,
    UpstreamUnavailableError,
    ValidationError,
)
from shared.upgrades.after_failure import (
    DEFAULT_THROTTLE_DEFER_SECONDS,
    Decision,
    Defer,
    DeferralLimits,
    Failure,
    Final,
    Progress,
    Retry,
    after_failure,
)

#: A queue invocation's limits: three deferrals, an hour after "try again later", 100 s of its budget left and a
#: retry policy that waits at most 45 s in one call, starting no attempt with less than 0.5 s left.
LIMITS = DeferralLimits(
    max_deferrals=3, defer_seconds=3600.0, budget_left=100.0, total_budget=45.0, min_attempt_time=0.5
)


def limits(**changes: float | None) -> DeferralLimits:
    return replace(LIMITS, **changes)


def progress(attempt: int = 1, max_attempts: int = 5, deferrals: int = 0, business_answers: int = 0) -> Progress:
    return Progress(attempt, max_attempts, deferrals, business_answers)


def try_again_later() -> PartnerCenterError:
    return PartnerCenterError(403, "900130", "Subscriptions were purchased recently. Try again later.")


def throttled(retry_after: int | None = None, *, customer: bool = False) -> PartnerCenterError:
    return PartnerCenterError(429, None, "Too many requests", retry_after=retry_after, customer_throttled=customer)


REFUSED = Final("rejected", retryable=False, reason="refused")
LAST_ATTEMPT = Final("failed", retryable=True, reason="last_attempt")

CASES: list[tuple[str, ProductUpgradeError, Progress, DeferralLimits | None, Decision]] = [
    # -- Partner Center's "try again later" (403 900130): deferred for the setting's wait, next MS-RequestId.
    (
        "try_again_later_waits_the_defer_setting_and_counts_a_business_answer",
        try_again_later(),
        progress(business_answers=2),
        LIMITS,
        Defer(3600.0, 3, otherwise=Final("rejected", retryable=True, reason="refused")),
    ),
    (
        "try_again_later_ignores_retry_after_and_the_time_left",
        PartnerCenterError(403, "900130", "later", retry_after=5),
        progress(),
        limits(defer_seconds=7.0),
        Defer(7.0, 1, otherwise=Final("rejected", retryable=True, reason="refused")),
    ),
    (
        "try_again_later_with_deferrals_used_up_ends_rejected_but_retryable",
        try_again_later(),
        progress(deferrals=3),
        LIMITS,
        Final("rejected", retryable=True, reason="deferrals_used_up"),
    ),
    # -- a customer Partner Center throttles on its own: deferred even when its Retry-After would fit.
    (
        "customer_held_429_is_deferred_for_its_retry_after",
        throttled(3, customer=True),
        progress(business_answers=1),
        LIMITS,
        Defer(3.0, 1, otherwise=Retry()),
    ),
    (
        "customer_held_429_without_retry_after_is_deferred_the_default_wait",
        throttled(customer=True),
        progress(),
        LIMITS,
        Defer(DEFAULT_THROTTLE_DEFER_SECONDS, 0, otherwise=Retry()),
    ),
    (
        "customer_held_429_with_deferrals_used_up_ends_failed_and_retryable",
        throttled(30, customer=True),
        progress(deferrals=4),
        LIMITS,
        Final("failed", retryable=True, reason="deferrals_used_up"),
    ),
    (
        "a_customer_hold_counts_only_on_a_429",
        PartnerCenterError(503, None, "Service unavailable", retry_after=600, customer_throttled=True),
        progress(),
        LIMITS,
        Retry(),
    ),
    # -- a 429: deferred only when its Retry-After and one attempt do not fit the time this call could wait.
    (
        "429_retry_after_beyond_the_policy_budget_is_deferred",
        throttled(45),
        progress(),
        LIMITS,
        Defer(45.0, 0, otherwise=Retry()),
    ),
    (
        "429_retry_after_beyond_the_invocations_time_left_is_deferred",
        throttled(10),
        progress(),
        limits(budget_left=10.0),
        Defer(10.0, 0, otherwise=Retry()),
    ),
    (
        "429_retry_after_within_the_time_left_goes_back_to_the_host",
        throttled(9),
        progress(),
        limits(budget_left=10.0),
        Retry(),
    ),
    (
        "429_retry_after_plus_one_attempt_exactly_the_time_left_goes_back_to_the_host",
        throttled(9),
        progress(),
        limits(budget_left=10.0, min_attempt_time=1.0),
        Retry(),
    ),
    (
        "429_outside_a_time_budget_is_measured_against_the_policy_budget",
        throttled(45),
        progress(),
        limits(budget_left=None),
        Defer(45.0, 0, otherwise=Retry()),
    ),
    (
        "429_fitting_the_policy_budget_outside_a_time_budget_goes_back_to_the_host",
        throttled(44),
        progress(),
        limits(budget_left=None),
        Retry(),
    ),
    (
        "429_with_the_budget_spent_is_deferred",
        throttled(0),
        progress(),
        limits(budget_left=-1.0),
        Defer(0.0, 0, otherwise=Retry()),
    ),
    (
        "429_deferred_on_the_last_attempt_would_otherwise_end_failed",
        throttled(600),
        progress(attempt=5),
        LIMITS,
        Defer(600.0, 0, otherwise=LAST_ATTEMPT),
    ),
    (
        "429_beyond_the_budget_with_deferrals_used_up_ends_failed_and_retryable",
        throttled(600),
        progress(deferrals=3),
        LIMITS,
        Final("failed", retryable=True, reason="deferrals_used_up"),
    ),
    (
        "429_that_only_used_up_the_attempts_goes_back_to_the_host_whatever_the_deferrals",
        throttled(),
        progress(deferrals=3),
        LIMITS,
        Retry(),
    ),
    ("429_on_the_last_attempt_ends_failed", throttled(1), progress(attempt=5), LIMITS, LAST_ATTEMPT),
    # -- everything else: a refusal ends at once; a transient failure is the host's until the last attempt.
    (
        "partner_center_refusal_is_rejected_at_once",
        PartnerCenterError(403, "900108", "No."),
        progress(),
        LIMITS,
        REFUSED,
    ),
    (
        "already_upgraded_is_rejected_at_once",
        PartnerCenterError(400, "900110", "The upgrade is already completed."),
        progress(),
        LIMITS,
        REFUSED,
    ),
    (
        "partner_center_outage_goes_back_to_the_host",
        PartnerCenterError(503, None, "Service unavailable", retry_after=600),
        progress(attempt=4),
        LIMITS,
        Retry(),
    ),
    (
        "partner_center_outage_on_the_last_attempt_ends_failed",
        PartnerCenterError(500, None, ""),
        progress(attempt=5),
        LIMITS,
        LAST_ATTEMPT,
    ),
    (
        "an_attempt_past_max_attempts_ends_failed",
        PartnerCenterError(500, None, ""),
        progress(attempt=5, max_attempts=2),
        LIMITS,
        LAST_ATTEMPT,
    ),
    (
        "a_connection_failure_goes_back_to_the_host",
        UpstreamUnavailableError("reset"),
        progress(attempt=1),
        None,
        Retry(),
    ),
    (
        "a_connection_failure_on_the_last_attempt_ends_failed",
        UpstreamUnavailableError("reset"),
        progress(attempt=5),
        None,
        LAST_ATTEMPT,
    ),
    (
        "a_storage_outage_is_not_deferred_for_its_retry_after",
        StorageUnavailableError("down"),
        progress(attempt=2),
        None,
        Retry(),
    ),
    (
        "a_missing_setting_on_the_last_attempt_ends_failed",
        MissingSettingError("PARTNER_CENTER_TENANT_ID"),
        progress(attempt=3, max_attempts=3),
        None,
        LAST_ATTEMPT,
    ),
    ("an_ineligible_customer_is_rejected", NotEligibleError("c", "no legacy offer"), progress(), None, REFUSED),
    ("an_invalid_request_is_rejected", ValidationError("customerId must be a GUID"), progress(), None, REFUSED),
]


@pytest.mark.parametrize(
    ("error", "where", "deferral", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_after_failure_decides_retry_defer_or_final(
    error: ProductUpgradeError, where: Progress, deferral: DeferralLimits | None, expected: Decision
) -> None:
    assert after_failure(Failure.of(error), where, deferral) == expected


def test_failure_reads_partner_center_answers_and_our_own_errors() -> None:
    assert Failure.of(try_again_later()) == Failure(transient=False, retryable=True, status=403, try_again_later=True)
    assert Failure.of(throttled(30, customer=True)) == Failure(
        transient=True, retryable=True, status=429, retry_after=30, customer_throttled=True
    )
    assert Failure.of(PartnerCenterError(404, "900106", "Not found")) == Failure(False, False, status=404)
    assert Failure.of(StorageUnavailableError("down")) == Failure(transient=True, retryable=True, retry_after=30)
    assert Failure.of(ValidationError("bad")) == Failure(transient=False, retryable=False)


failures = st.builds(
    Failure,
    transient=st.booleans(),
    retryable=st.booleans(),
    status=st.sampled_from([None, 400, 403, 404, 429, 500, 503]),
    retry_after=st.none() | st.integers(0, 7200),
    try_again_later=st.booleans(),
    customer_throttled=st.booleans(),
)
progresses = st.builds(
    Progress,
    attempt=st.integers(1, 6),
    max_attempts=st.integers(1, 5),
    deferrals=st.integers(0, 6),
    business_answers=st.integers(0, 5),
)
deferral_limits = st.builds(
    DeferralLimits,
    max_deferrals=st.integers(1, 5),
    defer_seconds=st.floats(1, 86400),
    budget_left=st.none() | st.floats(-5, 300),
    total_budget=st.floats(1, 120),
    min_attempt_time=st.floats(0, 2),
)


@given(failure=failures, where=progresses, deferral=deferral_limits)
def test_a_deferral_falls_back_to_the_decision_without_one_and_never_outlives_its_count(
    failure: Failure, where: Progress, deferral: DeferralLimits
) -> None:
    decision = after_failure(failure, where, deferral)
    without = after_failure(failure, where, None)
    assert not isinstance(without, Defer)
    if isinstance(decision, Defer):
        assert decision.otherwise == without
        assert where.deferrals < deferral.max_deferrals
        assert decision.delay_seconds >= 0
        assert decision.next_business_answers == where.business_answers + failure.try_again_later
    elif decision != without:
        assert decision == Final("failed" if failure.transient else "rejected", True, "deferrals_used_up")
