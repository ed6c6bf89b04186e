"""The three product-upgrade operations (create, eligibility, status) answered for one customer, once the call is
routed, authenticated and its body read: the customer's scripts first, then the upgrades.

A create refused (a 4xx other than 401/429) is kept by its MS-RequestId, for the refusal replay. The state is the
fake's, guarded by the fake's lock, which this shares.
"""

from __future__ import annotations

import threading

from sandbox.partner_center.documents import eligibility_document, status_document
from sandbox.partner_center.refusals import RefusalReplay
from sandbox.partner_center.replies import PartnerCenterError, Replies
from sandbox.partner_center.routes import Operation
from sandbox.partner_center.scripts import CustomerScripts
from sandbox.partner_center.store import UpgradeStore
from sandbox.server import RecordedRequest, Response


class Operations:
    """Answers the operations from ``store`` and ``scripts``; counts status calls answered 200 (``status_polls``)
    and the customers' 429s (``customer_throttled``)."""

    def __init__(
        self,
        lock: threading.RLock,
        store: UpgradeStore,
        scripts: CustomerScripts,
        refusals: RefusalReplay,
        replies: Replies,
    ) -> None:
        self._lock = lock
        self._store = store
        self._scripts = scripts
        self._refusals = refusals
        self._replies = replies
        self.status_polls = 0
        self.customer_throttled = 0

    def answer(self, req: RecordedRequest, operation: Operation, customer_id: str, product_family: str) -> Response:
        """The answer to ``operation`` about ``customer_id``; raises Partner Center's error for a refusal."""
        if operation.name == "create":
            return self._create(req, customer_id, product_family)
        scripted = self._scripted(req, customer_id, operation.name)
        if scripted is not None:
            return scripted
        if operation.name == "eligibility":
            return self._eligibility(req, customer_id, product_family)
        return self._status(req, operation.upgrade_id, customer_id)

    def _scripted(self, req: RecordedRequest, customer_id: str, operation: str) -> Response | None:
        """The customer's scripted answer to this call (an error, else a 429), or None to answer it for real."""
        with self._lock:
            forced = self._scripts.take_error(customer_id, operation)
            retry_after = self._scripts.take_throttle(customer_id) if forced is None else None
        if forced is not None:
            raise forced.error()
        return None if retry_after is None else self.throttled(req, retry_after)

    def throttled(self, req: RecordedRequest, retry_after: str) -> Response:
        """A customer's 429 (of its script, or of the customer directory), counted."""
        with self._lock:
            self.customer_throttled += 1
        return self._replies.throttled(req, retry_after)

    def _create(self, req: RecordedRequest, customer_id: str, product_family: str) -> Response:
        """A create, refused again word for word for an MS-RequestId refused before (while that is on)."""
        request_id = (req.headers.get("MS-RequestId") or "").lower()
        with self._lock:
            replayed = self._refusals.replayed(request_id) if request_id else None
        if replayed is not None:
            return replayed
        try:
            response = self._scripted(req, customer_id, "create") or self._new_upgrade(req, customer_id, product_family)
        except PartnerCenterError as error:
            response = self._replies.error(req, error)
        if request_id:
            with self._lock:
                self._refusals.remember(request_id, response)
        return response

    def _new_upgrade(self, req: RecordedRequest, customer_id: str, product_family: str) -> Response:
        """202 with the upgrade's Location, or the customer's refusal: ineligible, upgraded, or upgrading."""
        with self._lock:
            ineligible = self._scripts.ineligibility(customer_id)
            if ineligible is not None:
                raise ineligible.create_error()
            upgrade_id = self._store.create(
                customer_id,
                product_family,
                req.headers.get("MS-RequestId"),
                req.headers.get("MS-CorrelationId"),
                outcome=self._scripts.outcome(customer_id),
                interim=self._scripts.interim_status(customer_id),
            )
        headers = self._replies.headers(req)
        headers["Location"] = f"productUpgrades/{upgrade_id}"
        headers["Content-Length"] = "0"
        return Response(202, b"", headers)

    def _eligibility(self, req: RecordedRequest, customer_id: str, product_family: str) -> Response:
        with self._lock:
            ineligible = self._scripts.ineligibility(customer_id)
            running = self._store.running(customer_id, product_family)
            completed = self._store.completed(customer_id, product_family)
        body = eligibility_document(
            customer_id,
            product_family,
            ineligible_reason=ineligible.reason if ineligible is not None else None,
            running=running,
            completed=completed,
        )
        return self._replies.json(req, 200, body)

    def _status(self, req: RecordedRequest, upgrade_id: str, customer_id: str) -> Response:
        with self._lock:
            upgrade = self._store.poll(upgrade_id, customer_id)
            self.status_polls += 1
            body = status_document(upgrade)
        return self._replies.json(req, 200, body)
