"""After a queued request's attempt failed: let the host retry it, defer it, or end it with a final result.

Pure: the queue adapter gathers the facts (the error, the host's attempt, the deferrals so far, the time left)
and carries the decision out (a raise, the message back on the requests queue, a result message).

- Partner Center's "not now" is deferred while deferrals are left: 403 900130 "try again later" (after the
  ``PRODUCT_UPGRADE_DEFER_SECONDS`` setting, and its next attempt sends the next MS-RequestId: the answer was a
  business answer), a customer Partner Center throttles on its own (429), and a 429 whose Retry-After this
  invocation could not wait for. A 429 that merely used up the call's attempts goes back to the host instead.
- Deferrals used up: the request ends, with "try again later" still true of it (``retryable``).
- Otherwise a refusal (not transient) ends at once as ``rejected``; a transient failure is the host's to
  retry until its last attempt, which ends as ``failed`` with ``retryable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.errors import PartnerCenterError, ProductUpgradeError, ending_of

#: Delay before a throttled request is tried again when Partner Center named no Retry-After.
DEFAULT_THROTTLE_DEFER_SECONDS = 60.0


@dataclass(frozen=True)
class Failure:
    """What the attempt's error says about trying the request again."""

    #: Trying the same request later may succeed (outages, throttling, our own configuration).
    transient: bool
    #: ``retryable`` of the result, should the request end on this error.
    retryable: bool
    #: Partner Center's HTTP status; None when the failure is not Partner Center's answer.
    status: int | None = None
    retry_after: int | None = None
    #: 403 900130: "subscriptions were purchased recently; try again later".
    try_again_later: bool = False
    #: A 429 Partner Center keeps giving for this one customer while others go through.
    customer_throttled: bool = False

    @classmethod
    def of(cls, error: ProductUpgradeError) -> Failure:
        if not isinstance(error, PartnerCenterError):
            return cls(transient=error.transient, retryable=error.retryable, retry_after=error.retry_after)
        return cls(
            transient=error.transient,
            retryable=error.retryable,
            status=error.status,
            retry_after=error.retry_after,
            try_again_later=error.try_again_later,
            customer_throttled=error.customer_throttled,
        )


@dataclass(frozen=True)
class Progress:
    """Where the request stands: the host's attempt at this message, its deferrals and business answers so far."""

    #: The host's delivery of this message (its dequeue count, from 1) and the last one that writes a result.
    attempt: int
    max_attempts: int
    deferrals: int
    #: Business answers the request has had, the failed attempt's included: the MS-RequestId it used.
    business_answers: int


@dataclass(frozen=True)
class DeferralLimits:
    """What deferring may do in this invocation (the ``PRODUCT_UPGRADE_MAX_DEFERRALS`` and
    ``PRODUCT_UPGRADE_DEFER_SECONDS`` settings) and how long it could still wait for a Retry-After."""

    max_deferrals: int
    #: The wait after "try again later".
    defer_seconds: float
    #: Seconds left in the invocation's time budget; None outside one.
    budget_left: float | None
    #: The retry policy's budget for one call, and the time below which it starts no attempt.
    total_budget: float
    min_attempt_time: float


@dataclass(frozen=True)
class Retry:
    """Raise the error: the host delivers the message again after its visibility timeout."""


@dataclass(frozen=True)
class Final:
    """End the request now with this result (recorded in the ledger and written to the results queue)."""

    status: Literal["failed", "rejected"]
    retryable: bool
    #: Why it ends: a refusal, the host's last attempt, or deferrals used up.
    reason: Literal["refused", "last_attempt", "deferrals_used_up"]


@dataclass(frozen=True)
class Defer:
    """Put the request back on the requests queue, visible after ``delay_seconds``; no result yet."""

    delay_seconds: float
    #: The business answers the deferred message carries: its next attempt's MS-RequestId.
    next_business_answers: int
    #: The decision instead, when the requests queue cannot be written.
    otherwise: Retry | Final


Decision = Retry | Defer | Final


def after_failure(failure: Failure, progress: Progress, limits: DeferralLimits | None) -> Decision:
    """What to do with a request whose attempt failed; ``limits`` None when it cannot be deferred (the failure is
    not Partner Center's: the invocation may have no runtime to defer with)."""
    if limits is None or not not_now(failure, limits):
        return without_deferral(failure, progress)
    if progress.deferrals >= limits.max_deferrals:
        return Final(ending_of(failure.transient), retryable=True, reason="deferrals_used_up")
    if failure.try_again_later:
        delay = limits.defer_seconds
    else:
        delay = float(failure.retry_after) if failure.retry_after is not None else DEFAULT_THROTTLE_DEFER_SECONDS
    # "Try again later" is a business answer: the next attempt takes the next MS-RequestId; a 429 got none.
    answers = progress.business_answers + 1 if failure.try_again_later else progress.business_answers
    return Defer(delay, answers, otherwise=without_deferral(failure, progress))


def not_now(failure: Failure, limits: DeferralLimits) -> bool:
    """Partner Center said "later": 900130, a customer it holds longer than this function waits, or a 429 whose
    Retry-After this invocation could not wait for (a 429 that merely used up the attempts goes back to the
    host's retries instead)."""
    if failure.try_again_later or (failure.status == 429 and failure.customer_throttled):
        return True
    if failure.status != 429 or failure.retry_after is None:
        return False
    left = min(limits.total_budget, limits.budget_left or limits.total_budget)
    return failure.retry_after + limits.min_attempt_time > left


def without_deferral(failure: Failure, progress: Progress) -> Retry | Final:
    """A refusal ends now; a transient failure is the host's to retry until its last attempt."""
    if not failure.transient:
        return Final("rejected", retryable=failure.retryable, reason="refused")
    if progress.attempt < progress.max_attempts:
        return Retry()
    return Final("failed", retryable=True, reason="last_attempt")
