"""The upgrades the fake knows, by id and by ``MS-RequestId``, and the rules for when new ones end.

A create with an ``MS-RequestId`` already seen names the same upgrade (idempotency); otherwise the customer's
completed upgrade refuses it for good (400 900110) and a running one refuses it for now (409 900109). Not
thread-safe: the fake calls it under its lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sandbox.constants import ALREADY_UPGRADED_REASON
from sandbox.partner_center.replies import PartnerCenterError
from sandbox.partner_center.upgrades import Outcome, Upgrade, new_subscription


class UpgradeStore:
    def __init__(self) -> None:
        #: Lower-cased upgrade id -> upgrade.
        self.upgrades: dict[str, Upgrade] = {}
        #: One record per upgrade created by a call (not by :meth:`add`), in order.
        self.created: list[dict[str, Any]] = []
        #: Upgrades created from now on end on the status poll after this many (None: not by polls).
        self.complete_after: int | None = None
        #: Upgrades created from now on end on the first status poll this long after their creation (None: not so).
        self.complete_after_seconds: float | None = None
        self._by_request_id: dict[str, str] = {}

    def clear(self) -> None:
        self.upgrades.clear()
        self.created.clear()
        self._by_request_id.clear()
        self.complete_after = None
        self.complete_after_seconds = None

    def get(self, upgrade_id: str) -> Upgrade:
        return self.upgrades[upgrade_id.lower()]

    def add(self, upgrade: Upgrade) -> None:
        self.upgrades[upgrade.upgrade_id.lower()] = upgrade

    def running(self, customer_id: str, product_family: str) -> Upgrade | None:
        # Running: a running state, or the state it shows while running (which may be one the app does not know).
        return self._find(customer_id, product_family, lambda upgrade: upgrade.running)

    def completed(self, customer_id: str, product_family: str) -> Upgrade | None:
        """The customer's upgrade that has completed: Partner Center refuses another one (900110), for good."""
        return self._find(customer_id, product_family, lambda upgrade: upgrade.status.lower() == "completed")

    def _find(self, customer_id: str, product_family: str, matches: Callable[[Upgrade], bool]) -> Upgrade | None:
        for upgrade in self.upgrades.values():
            if upgrade.of(customer_id, product_family) and matches(upgrade):
                return upgrade
        return None

    def create(
        self,
        customer_id: str,
        product_family: str,
        request_id: str | None,
        correlation_id: str | None,
        *,
        outcome: Outcome,
        interim: str,
    ) -> str:
        """The id of the upgrade a create call names: the one of its ``MS-RequestId``, else a new one ending with
        ``outcome`` and showing ``interim`` while it runs; raises Partner Center's refusal of another upgrade."""
        if request_id and request_id.lower() in self._by_request_id:
            return self._by_request_id[request_id.lower()]
        completed = self.completed(customer_id, product_family)
        if completed is not None:
            raise PartnerCenterError(400, 900110, f"{ALREADY_UPGRADED_REASON} (upgrade {completed.upgrade_id})")
        running = self.running(customer_id, product_family)
        if running is not None:
            raise PartnerCenterError(
                409,
                900109,
                f"An upgrade is already in progress for customer {customer_id} (upgrade {running.upgrade_id}).",
            )
        seconds = self.complete_after_seconds
        upgrade = Upgrade(
            str(uuid.uuid4()),
            customer_id,
            product_family,
            request_id,
            correlation_id,
            status=interim,
            complete_after=self.complete_after,
            complete_at=None if seconds is None else time.time() + seconds,
            outcome=outcome,
            interim_status=interim,
            subscriptions=[new_subscription() for _ in outcome.line_items or (None,)],
        )
        self.add(upgrade)
        self.created.append(upgrade.as_record())
        if request_id:
            self._by_request_id[request_id.lower()] = upgrade.upgrade_id
        return upgrade.upgrade_id

    def complete_after_polls(self, n: int, upgrade_id: str | None = None) -> None:
        """``upgrade_id`` (or, without it, every running upgrade and those created from now on) ends on the status
        poll after ``n`` more."""
        if upgrade_id is None:
            self.complete_after = n
            targets = [u for u in self.upgrades.values() if u.running]
        else:
            targets = [self.get(upgrade_id)]
        for upgrade in targets:
            upgrade.complete_after = upgrade.polls + n

    def poll(self, upgrade_id: str, customer_id: str) -> Upgrade:
        """A status poll of ``upgrade_id`` by ``customer_id``: counted, and the upgrade ended if due; raises 404
        900106 for an upgrade unknown, or another customer's."""
        upgrade = self.upgrades.get(upgrade_id.lower())
        if upgrade is None or upgrade.customer_id.lower() != customer_id.lower():
            raise PartnerCenterError(404, 900106, f"The upgrade '{upgrade_id}' was not found.")
        upgrade.polls += 1
        if upgrade.due(time.time()):
            upgrade.end()
        return upgrade
