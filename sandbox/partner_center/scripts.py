"""What a test (or the sandbox's customers) scripts per customer: errors, ineligibility, throttling, and how the
customer's upgrades run and end.

Keys are customer ids, case ignored. Not thread-safe: the fake calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.partner_center.replies import PartnerCenterError
from sandbox.partner_center.upgrades import COMPLETED, Outcome


@dataclass
class CustomerError:
    status: int
    code: int | str | None
    description: str
    operations: frozenset[str] | None  # None: every operation
    data: list[Any] = field(default_factory=list)
    #: Calls left to refuse (None: every one).
    remaining: int | None = None

    def error(self) -> PartnerCenterError:
        return PartnerCenterError(self.status, self.code, self.description, self.data)


@dataclass(frozen=True)
class Ineligible:
    """Eligibility answers ``isEligible: false`` with ``reason``; a create answers ``create_status``/``create_code``."""

    reason: str
    create_status: int
    create_code: int | str

    def create_error(self) -> PartnerCenterError:
        return PartnerCenterError(self.create_status, self.create_code, self.reason)


class CustomerScripts:
    """The per-customer scripts of one fake Partner Center."""

    def __init__(self) -> None:
        self.errors: dict[str, CustomerError] = {}
        self.ineligible: dict[str, Ineligible] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.interim: dict[str, str] = {}
        #: Customer -> (Retry-After, calls left or None for every call).
        self.throttles: dict[str, tuple[str, int | None]] = {}

    def clear(self) -> None:
        for scripts in (self.errors, self.ineligible, self.outcomes, self.interim, self.throttles):
            scripts.clear()

    def take_error(self, customer_id: str, operation: str) -> CustomerError | None:
        """The scripted error for this call, or None; one with calls left counts this one."""
        forced = self.errors.get(customer_id.lower())
        if forced is None or (forced.operations is not None and operation not in forced.operations):
            return None
        if forced.remaining is not None:
            forced.remaining -= 1
            if forced.remaining <= 0:
                del self.errors[customer_id.lower()]
        return forced

    def take_throttle(self, customer_id: str) -> str | None:
        """The Retry-After of a scripted 429 for this call, or None."""
        throttle = self.throttles.get(customer_id.lower())
        if throttle is None:
            return None
        retry_after, calls = throttle
        if calls is not None:
            if calls <= 1:
                del self.throttles[customer_id.lower()]
            else:
                self.throttles[customer_id.lower()] = (retry_after, calls - 1)
        return retry_after

    def ineligibility(self, customer_id: str) -> Ineligible | None:
        return self.ineligible.get(customer_id.lower())

    def outcome(self, customer_id: str) -> Outcome:
        """How the customer's upgrades created from now on end."""
        return self.outcomes.get(customer_id.lower(), COMPLETED)

    def interim_status(self, customer_id: str) -> str:
        """What the customer's upgrades created from now on show while they run."""
        return self.interim.get(customer_id.lower(), "InProgress")
