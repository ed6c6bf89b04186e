"""The fake Partner Center itself: :class:`FakePartnerCenter`, its control surface for tests and the routing of
its calls.

What each call answers lives beside it: the operations' paths and bodies (:mod:`~sandbox.partner_center.routes`),
the front door (:mod:`~sandbox.partner_center.auth`), the operations themselves
(:mod:`~sandbox.partner_center.operations`) over the upgrades (:mod:`~sandbox.partner_center.store`) and the
per-customer scripts, the rate limit, and Partner Center's headers and error bodies
(:mod:`~sandbox.partner_center.replies`).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from typing import Any

from sandbox.directory import CONTINUATION_HEADER, CUSTOMERS_PATH, SUBSCRIPTIONS_PATH, CustomerDirectory, DirectoryError
from sandbox.entra import FakeEntra
from sandbox.partner_center import routes
from sandbox.partner_center.auth import check_bearer
from sandbox.partner_center.operations import Operations
from sandbox.partner_center.rate_limit import TokenBucket
from sandbox.partner_center.refusals import RefusalReplay
from sandbox.partner_center.replies import PartnerCenterError, Replies, rate_limit_body
from sandbox.partner_center.scripts import CustomerError, CustomerScripts, Ineligible
from sandbox.partner_center.store import UpgradeStore
from sandbox.partner_center.upgrades import LineOutcome, Outcome, Upgrade
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import TLSMaterial


class FakePartnerCenter(FakeHTTPServer):
    """Product upgrades: create (202 + Location), eligibility, status (a POST).

    Records: ``requests`` (all, with headers), ``create_posts`` (every POST to the create path, whatever the
    outcome, injected faults included), ``created_upgrades`` (one dict per upgrade really created: upgrade_id,
    customer_id, product_family, request_id, correlation_id), ``status_polls`` (count of status calls answered
    200), ``upgrades`` (lower-cased id -> Upgrade), ``rate_limited`` and ``rate_limited_at`` (429s of
    :meth:`admit_per_second`, and when) and ``customer_throttled`` (429s of :meth:`throttle_customer`);
    ``in_flight``/``max_in_flight`` and ``requests_per_path`` come with the base server. ``directory`` holds the
    customers ``GET /v1/customers`` lists and their subscriptions (empty until a population is installed).
    """

    server_header = "Microsoft-IIS/10.0"

    def __init__(self, entra: FakeEntra | None, *, tls: TLSMaterial | None = None) -> None:
        super().__init__(tls=tls)
        self.entra = entra
        self.create_posts = 0
        self.directory = CustomerDirectory()
        self.server_id = str(secrets.randbelow(900_000_000) + 100_000_000)
        #: Calls answered 429 by :meth:`admit_per_second`'s rate limit, and when (``time.time()``).
        self.rate_limited = 0
        self.rate_limited_at: list[float] = []
        self._store = UpgradeStore()
        self._scripts = CustomerScripts()
        #: Create refusals by MS-RequestId, replayed for the same id while :meth:`replay_refusals` is on.
        self._refusals = RefusalReplay()
        self._bucket = TokenBucket()
        self._replies = Replies(self.server_id)
        self._operations = Operations(self._lock, self._store, self._scripts, self._refusals, self._replies)
        self._service_seconds = 0.0

    @property
    def upgrades(self) -> dict[str, Upgrade]:
        """Every upgrade, by lower-cased id (the live dict)."""
        return self._store.upgrades

    @property
    def created_upgrades(self) -> list[dict[str, Any]]:
        """One record per upgrade created by a call, in order (the live list)."""
        return self._store.created

    @property
    def status_polls(self) -> int:
        """Status calls answered 200."""
        return self._operations.status_polls

    @property
    def customer_throttled(self) -> int:
        """Calls answered 429 by :meth:`throttle_customer` (one customer's limit, not the partner's)."""
        return self._operations.customer_throttled

    # -- control ---------------------------------------------------------------------------------------
    def set_customer_error(
        self,
        customer_id: str,
        status: int,
        code: int | str | None,
        description: str = "",
        *,
        operations: tuple[str, ...] | None = None,
        data: list[Any] | None = None,
        times: int | None = None,
    ) -> None:
        """Every call about ``customer_id`` (or only ``operations`` among create/eligibility/status; only the next
        ``times`` of them) fails with ``status`` and Partner Center's error body; ``code`` None or "" leaves
        ``code`` out of the body."""
        description = description or f"Error {code} for customer {customer_id}."
        only = frozenset(operations) if operations is not None else None
        with self._lock:
            self._scripts.errors[customer_id.lower()] = CustomerError(
                status, code, description, only, list(data or []), times
            )

    def clear_customer_error(self, customer_id: str) -> None:
        with self._lock:
            self._scripts.errors.pop(customer_id.lower(), None)

    def set_ineligible(
        self, customer_id: str, reason: str, *, create_status: int = 403, create_code: int | str = 900108
    ) -> None:
        """Eligibility answers ``isEligible: false`` with ``reason``; a create answers ``create_status``."""
        with self._lock:
            self._scripts.ineligible[customer_id.lower()] = Ineligible(reason, create_status, create_code)

    def throttle_next(self, n: int = 1, retry_after: str = "2", *, match: str | None = None) -> None:
        """The next ``n`` requests get 429 with ``Retry-After`` (the gateway's body, before authentication)."""
        headers = {"Retry-After": str(retry_after), "Content-Type": "application/json"}
        self.fail_next(n, 429, rate_limit_body(retry_after), headers, match=match)

    def throttle_customer(self, customer_id: str, retry_after: str = "30", *, calls: int | None = None) -> None:
        """Calls about ``customer_id`` answer 429 with ``Retry-After`` (all of them, or the next ``calls``):
        Partner Center's per-partner-and-customer limit, so other customers go through."""
        with self._lock:
            self._scripts.throttles[customer_id.lower()] = (str(retry_after), calls)

    def set_outcome(
        self,
        customer_id: str,
        status: str,
        *,
        error_details: dict[str, Any] | None = None,
        line_item_error_details: dict[str, Any] | None = None,
        line_items: tuple[LineOutcome, ...] | None = None,
    ) -> None:
        """Upgrades of ``customer_id`` created from now on end with ``status`` (instead of Completed); with
        ``line_items``, they have one subscription per entry, each ending as it says."""
        outcome = Outcome(status, error_details, line_item_error_details, line_items)
        with self._lock:
            self._scripts.outcomes[customer_id.lower()] = outcome

    def set_interim_status(self, customer_id: str, status: str) -> None:
        """Upgrades of ``customer_id`` created from now on report ``status`` (instead of InProgress) while they run."""
        with self._lock:
            self._scripts.interim[customer_id.lower()] = status

    def replay_refusals(self, on: bool = True) -> None:
        """While on, a create refused (a 4xx about the request or customer) is refused again, word for word, when
        the same MS-RequestId comes back: idempotency on MS-RequestId, as a timeout retry relies on."""
        with self._lock:
            self._refusals.on = on

    def set_upgrade_status(
        self,
        upgrade_id: str,
        status: str,
        *,
        error_details: dict[str, Any] | None = None,
        line_item_error_details: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self._store.get(upgrade_id).set_status(status, error_details, line_item_error_details)

    def complete_after_polls(self, n: int, upgrade_id: str | None = None) -> None:
        """Status calls 1..n answer InProgress, call n+1 and later answer Completed (n=0: at once).

        Without ``upgrade_id``: for upgrades created from now on and every running one.
        """
        with self._lock:
            self._store.complete_after_polls(n, upgrade_id)

    def complete_after_seconds(self, seconds: float | None) -> None:
        """Upgrades created from now on end on the first status poll ``seconds`` after their creation (None: off).

        Combined with :meth:`complete_after_polls`, whichever comes first ends an upgrade.
        """
        with self._lock:
            self._store.complete_after_seconds = seconds

    def add_upgrade(
        self, customer_id: str, product_family: str = "Azure", status: str = "InProgress", upgrade_id: str | None = None
    ) -> str:
        """Create an upgrade directly (test setup), not counted in ``created_upgrades``."""
        upgrade = Upgrade(upgrade_id or str(uuid.uuid4()), customer_id, product_family, None, None, status)
        with self._lock:
            self._store.add(upgrade)
        return upgrade.upgrade_id

    def admit_per_second(self, rate: float | None) -> None:
        """Admit at most ``rate`` calls per second for the partner, all callers together, as a token bucket holding
        one second's worth; beyond it, answer 429 with the gateway's body and ``Retry-After`` in whole seconds (the
        time until the next token). None lifts the limit. Changing the rate of a limit in force (Partner Center
        tightening or easing mid-campaign) keeps the tokens in hand, up to the new second's worth."""
        with self._lock:
            self._bucket.set_rate(rate, time.monotonic())

    def service_time(self, seconds: float) -> None:
        """Every call admitted takes ``seconds`` before it is answered (the real service is not instant)."""
        self._service_seconds = seconds

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.create_posts = 0
            self._operations.status_polls = self._operations.customer_throttled = 0
            self._store.clear()
            self._scripts.clear()
            self._refusals.clear()
            self.rate_limited = 0
            self.rate_limited_at.clear()
        self.directory.clear()

    # -- wire ------------------------------------------------------------------------------------------
    def observe(self, req: RecordedRequest) -> None:
        if routes.is_create_post(req):
            self.create_posts += 1

    def handle(self, req: RecordedRequest) -> Response:
        limited = self._rate_limit(req)
        if limited is not None:
            return limited
        if self._service_seconds:
            self._stop_event.wait(self._service_seconds)
        try:
            return self._answer(req)
        except PartnerCenterError as error:
            return self._replies.error(req, error)

    def _rate_limit(self, req: RecordedRequest) -> Response | None:
        """The partner-wide limit of :meth:`admit_per_second`: None if the call is admitted, else its 429."""
        with self._lock:
            retry_after = self._bucket.take(time.monotonic())
            if retry_after is None:
                return None
            self.rate_limited += 1
            self.rate_limited_at.append(time.time())
        return self._replies.throttled(req, retry_after)

    def _answer(self, req: RecordedRequest) -> Response:
        """The call routed: the customer directory, else one of the three operations on one customer."""
        subscriptions = SUBSCRIPTIONS_PATH.match(req.path)
        if subscriptions is not None or CUSTOMERS_PATH.match(req.path):
            return self._directory_answer(req, subscriptions)
        operation = routes.operation(req.path)
        if operation is None:
            return self._replies.no_route(req)
        if req.method != "POST":
            return self._replies.wrong_method(req)
        check_bearer(req, self.entra)
        customer_id, product_family = routes.subject(req)
        return self._operations.answer(req, operation, customer_id, product_family)

    def _directory_answer(self, req: RecordedRequest, subscriptions: re.Match[str] | None) -> Response:
        """The customer list, or a customer's subscriptions (GET)."""
        if req.method != "GET":
            return self._replies.wrong_method(req)
        check_bearer(req, self.entra)
        try:
            if subscriptions is not None:
                body = self.directory.subscriptions(subscriptions.group(1))
            else:
                body = self.directory.customers_page(req.query, req.headers.get(CONTINUATION_HEADER))
        except DirectoryError as exc:
            if exc.status == 429:
                return self._operations.throttled(req, exc.retry_after or "1")
            extra = {"Retry-After": exc.retry_after} if exc.retry_after else None
            raise PartnerCenterError(exc.status, exc.code, exc.description, extra=extra) from None
        return self._replies.json(req, 200, body)
