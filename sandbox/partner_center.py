"""A fake Partner Center REST API (api.partnercenter.microsoft.com): the three product-upgrade operations, and the
customer list and each customer's subscriptions (:mod:`sandbox.directory`), which discovery reads.

Paths are matched case-insensitively, as the real service does. Every answer carries ``MS-CorrelationId`` and
``MS-RequestId`` (echoed when sent, else generated), ``MS-CV`` and ``MS-ServerId``. Errors use Partner Center's
shape ``{"code", "description", "data", "source"}``; throttling answers 429 with ``Retry-After`` and the gateway's
``{"statusCode": 429, "message"}`` body. A status document is shaped like the docs' example: one line item per
subscription, source ``AzureSubscription`` with the subscription's GUID, target ``Microsoft Azure plan``, and no
``errorDetails`` key where there is no error.
"""

from __future__ import annotations

import base64
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.constants import ALREADY_UPGRADED_REASON, PARTNER_CENTER_RESOURCE
from sandbox.directory import CONTINUATION_HEADER, CUSTOMERS_PATH, SUBSCRIPTIONS_PATH, CustomerDirectory, DirectoryError
from sandbox.entra import FakeEntra
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from sandbox.tls import TLSMaterial

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_STATUS_PATH = re.compile(r"^/v1/productupgrades/([^/]+)/status/?$", re.IGNORECASE)
_CREATE_PATH = re.compile(r"^/v1/productupgrades/?$", re.IGNORECASE)
_ELIGIBILITY_PATH = re.compile(r"^/v1/productupgrades/eligibility/?$", re.IGNORECASE)

#: Upgrade states that mean "still running" (a second create for the customer gets 409 900109).
RUNNING_STATES = frozenset({"inprogress", "notstarted", "pending", "queued", "running"})

#: The products' names in the docs' example status document (their ids are the subscriptions' GUIDs).
SOURCE_PRODUCT_NAME = "AzureSubscription"
TARGET_PRODUCT_NAME = "Microsoft Azure plan"

#: 401 bodies: no bearer token at all (Partner Center's PartnerTokenMissing), or one it does not accept.
TOKEN_MISSING = ("800001", "The partner token is missing in the request context.")
TOKEN_INVALID = ("400", "Invalid token: the access token is expired or not valid for Partner Center.")


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


@dataclass(frozen=True)
class LineOutcome:
    """How one line item (one subscription) ends."""

    status: str
    error_details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How an upgrade ends: its final ``status`` and ``errorDetails`` (top level and on the line item)."""

    status: str = "Completed"
    error_details: dict[str, Any] | None = None
    line_item_error_details: dict[str, Any] | None = None
    #: One per subscription when they end differently (a partial upgrade); None: one line item, ending as the upgrade.
    line_items: tuple[LineOutcome, ...] | None = None


COMPLETED = Outcome()


@dataclass
class Upgrade:
    upgrade_id: str
    customer_id: str
    product_family: str
    request_id: str | None
    correlation_id: str | None
    status: str = "InProgress"
    polls: int = 0
    #: Ends on the status poll after this many (None: not by polls).
    complete_after: int | None = None
    #: Ends on the first status poll at or after this time.time() (None: not by time).
    complete_at: float | None = None
    #: How it ends: status and error details (a Failed upgrade carries them; a Completed one has none).
    outcome: Outcome = COMPLETED
    upgraded_date: str | None = None
    error_details: dict[str, Any] | None = None
    line_item_error_details: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    #: The status shown while it runs (``InProgress``, or a state the app does not know).
    interim_status: str = "InProgress"
    #: (subscription id, Azure plan id) of each line item.
    subscriptions: list[tuple[str, str]] = field(default_factory=lambda: [_new_subscription()])
    #: Each line item's end, once ended so (a partial upgrade); None: every line item as the upgrade.
    line_outcomes: tuple[LineOutcome, ...] | None = None

    @property
    def running(self) -> bool:
        return self.status.lower() in RUNNING_STATES or self.status == self.interim_status

    def as_record(self) -> dict[str, Any]:
        return {
            "upgrade_id": self.upgrade_id,
            "customer_id": self.customer_id,
            "product_family": self.product_family,
            "request_id": self.request_id,
            "correlation_id": self.correlation_id,
        }


def _new_subscription() -> tuple[str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4())


@dataclass
class CustomerError:
    status: int
    code: int | str | None
    description: str
    operations: frozenset[str] | None  # None: every operation
    data: list[Any] = field(default_factory=list)
    #: Calls left to refuse (None: every one).
    remaining: int | None = None


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
        self.status_polls = 0
        self.created_upgrades: list[dict[str, Any]] = []
        self.upgrades: dict[str, Upgrade] = {}
        self.directory = CustomerDirectory()
        self._by_request_id: dict[str, str] = {}
        self._customer_errors: dict[str, CustomerError] = {}
        self._ineligible: dict[str, tuple[str, int, int | str]] = {}
        self._complete_after: int | None = None
        self._complete_after_seconds: float | None = None
        self._outcomes: dict[str, Outcome] = {}
        self._interim: dict[str, str] = {}
        self._throttled: dict[str, tuple[str, int | None]] = {}
        #: Create refusals by MS-RequestId, replayed for the same id while :meth:`replay_refusals` is on.
        self._refusals: dict[str, Response] = {}
        self._replay_refusals = False
        self.server_id = str(secrets.randbelow(900_000_000) + 100_000_000)
        #: Calls answered 429 by :meth:`admit_per_second`'s rate limit, and when (``time.time()``).
        self.rate_limited = 0
        self.rate_limited_at: list[float] = []
        #: Calls answered 429 by :meth:`throttle_customer` (one customer's limit, not the partner's).
        self.customer_throttled = 0
        self._rate: float | None = None
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._service_seconds = 0.0

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
        with self._lock:
            self._customer_errors[customer_id.lower()] = CustomerError(
                status,
                code,
                description or f"Error {code} for customer {customer_id}.",
                frozenset(operations) if operations is not None else None,
                list(data or []),
                times,
            )

    def clear_customer_error(self, customer_id: str) -> None:
        with self._lock:
            self._customer_errors.pop(customer_id.lower(), None)

    def set_ineligible(
        self, customer_id: str, reason: str, *, create_status: int = 403, create_code: int | str = 900108
    ) -> None:
        """Eligibility answers ``isEligible: false`` with ``reason``; a create answers ``create_status``."""
        with self._lock:
            self._ineligible[customer_id.lower()] = (reason, create_status, create_code)

    def throttle_next(self, n: int = 1, retry_after: str = "2", *, match: str | None = None) -> None:
        """The next ``n`` requests get 429 with ``Retry-After`` (the gateway's body, before authentication)."""
        self.fail_next(
            n,
            429,
            {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."},
            {"Retry-After": str(retry_after), "Content-Type": "application/json"},
            match=match,
        )

    def throttle_customer(self, customer_id: str, retry_after: str = "30", *, calls: int | None = None) -> None:
        """Calls about ``customer_id`` answer 429 with ``Retry-After`` (all of them, or the next ``calls``):
        Partner Center's per-partner-and-customer limit, so other customers go through."""
        with self._lock:
            self._throttled[customer_id.lower()] = (str(retry_after), calls)

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
        with self._lock:
            self._outcomes[customer_id.lower()] = Outcome(status, error_details, line_item_error_details, line_items)

    def set_interim_status(self, customer_id: str, status: str) -> None:
        """Upgrades of ``customer_id`` created from now on report ``status`` (instead of InProgress) while they run."""
        with self._lock:
            self._interim[customer_id.lower()] = status

    def replay_refusals(self, on: bool = True) -> None:
        """While on, a create refused (a 4xx about the request or customer) is refused again, word for word, when
        the same MS-RequestId comes back: idempotency on MS-RequestId, as a timeout retry relies on."""
        with self._lock:
            self._replay_refusals = on

    def set_upgrade_status(
        self,
        upgrade_id: str,
        status: str,
        *,
        error_details: dict[str, Any] | None = None,
        line_item_error_details: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            upgrade = self.upgrades[upgrade_id.lower()]
            upgrade.status = status
            upgrade.line_outcomes = None
            upgrade.complete_after = upgrade.complete_at = None
            upgrade.error_details = error_details
            upgrade.line_item_error_details = line_item_error_details
            if status.lower() == "completed" and upgrade.upgraded_date is None:
                upgrade.upgraded_date = datetime.now(UTC).isoformat()

    def complete_after_polls(self, n: int, upgrade_id: str | None = None) -> None:
        """Status calls 1..n answer InProgress, call n+1 and later answer Completed (n=0: at once).

        Without ``upgrade_id``: for upgrades created from now on and every running one.
        """
        with self._lock:
            if upgrade_id is None:
                self._complete_after = n
                targets = [u for u in self.upgrades.values() if u.running]
            else:
                targets = [self.upgrades[upgrade_id.lower()]]
            for upgrade in targets:
                upgrade.complete_after = upgrade.polls + n

    def complete_after_seconds(self, seconds: float | None) -> None:
        """Upgrades created from now on end on the first status poll ``seconds`` after their creation (None: off).

        Combined with :meth:`complete_after_polls`, whichever comes first ends an upgrade.
        """
        with self._lock:
            self._complete_after_seconds = seconds

    def add_upgrade(
        self, customer_id: str, product_family: str = "Azure", status: str = "InProgress", upgrade_id: str | None = None
    ) -> str:
        """Create an upgrade directly (test setup), not counted in ``created_upgrades``."""
        upgrade = Upgrade(upgrade_id or str(uuid.uuid4()), customer_id, product_family, None, None, status)
        with self._lock:
            self.upgrades[upgrade.upgrade_id.lower()] = upgrade
        return upgrade.upgrade_id

    def admit_per_second(self, rate: float | None) -> None:
        """Admit at most ``rate`` calls per second for the partner, all callers together, as a token bucket holding
        one second's worth; beyond it, answer 429 with the gateway's body and ``Retry-After`` in whole seconds (the
        time until the next token). None lifts the limit. Changing the rate of a limit in force (Partner Center
        tightening or easing mid-campaign) keeps the tokens in hand, up to the new second's worth."""
        with self._lock:
            if self._rate is not None and rate is not None:
                self._refill(time.monotonic())
                self._tokens = min(self._tokens, max(1.0, rate))
            else:
                self._tokens = max(1.0, rate or 0.0)
                self._refilled_at = time.monotonic()
            self._rate = rate

    def service_time(self, seconds: float) -> None:
        """Every call admitted takes ``seconds`` before it is answered (the real service is not instant)."""
        self._service_seconds = seconds

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.create_posts = 0
            self.status_polls = 0
            self.created_upgrades.clear()
            self.upgrades.clear()
            self._by_request_id.clear()
            self._customer_errors.clear()
            self._ineligible.clear()
            self._complete_after = None
            self._complete_after_seconds = None
            self._outcomes.clear()
            self._interim.clear()
            self._throttled.clear()
            self._refusals.clear()
            self._replay_refusals = False
            self.rate_limited = 0
            self.rate_limited_at.clear()
            self.customer_throttled = 0
        self.directory.clear()

    # -- wire ------------------------------------------------------------------------------------------
    def _headers(self, req: RecordedRequest) -> dict[str, str]:
        cv = base64.b64encode(secrets.token_bytes(12)).decode().rstrip("=") + ".0"
        return {
            "MS-CorrelationId": req.headers.get("MS-CorrelationId") or str(uuid.uuid4()),
            "MS-RequestId": req.headers.get("MS-RequestId") or str(uuid.uuid4()),
            "MS-CV": cv,
            "MS-ServerId": self.server_id,
        }

    def _json(self, req: RecordedRequest, status: int, body: Any, extra: dict[str, str] | None = None) -> Response:
        headers = self._headers(req)
        headers.update(extra or {})
        return Response.json(status, body, headers)

    def _pc_error(
        self,
        req: RecordedRequest,
        status: int,
        code: int | str | None,
        description: str,
        data: list[Any] | None = None,
        extra: dict[str, str] | None = None,
    ) -> Response:
        body: dict[str, Any] = {"code": code, "description": description, "data": data or [], "source": "PartnerCenter"}
        if code is None or code == "":
            del body["code"]  # e.g. a 403 for a token without the needed role: no Partner Center error code
        return self._json(req, status, body, extra)

    def observe(self, req: RecordedRequest) -> None:
        if req.method == "POST" and _CREATE_PATH.match(req.path):
            self.create_posts += 1

    def handle(self, req: RecordedRequest) -> Response:
        limited = self._rate_limit(req)
        if limited is not None:
            return limited
        if self._service_seconds:
            self._stop_event.wait(self._service_seconds)
        return self._answer(req)

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        self._tokens = min(max(1.0, self._rate), self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now

    def _rate_limit(self, req: RecordedRequest) -> Response | None:
        with self._lock:
            if self._rate is None:
                return None
            self._refill(time.monotonic())
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            self.rate_limited += 1
            self.rate_limited_at.append(time.time())
            retry_after = max(1, math.ceil((1.0 - self._tokens) / self._rate))
        return self._json(
            req,
            429,
            {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."},
            {"Retry-After": str(retry_after)},
        )

    def _answer(self, req: RecordedRequest) -> Response:
        read = self._directory_answer(req)
        if read is not None:
            return read
        path = req.path
        if _CREATE_PATH.match(path):
            operation = "create"
        elif _ELIGIBILITY_PATH.match(path):
            operation = "eligibility"
        elif (m := _STATUS_PATH.match(path)) is not None:
            operation = "status"
        else:
            return self._json(
                req, 404, {"Message": f"No HTTP resource was found that matches the request URI '{req.target}'."}
            )
        if req.method != "POST":
            return self._json(
                req, 405, {"Message": f"The requested resource does not support http method '{req.method}'."}
            )

        unauthorized = self._check_auth(req)
        if unauthorized is not None:
            return unauthorized

        try:
            body = req.json()
        except ValueError:
            return self._pc_error(req, 400, 400056, "Invalid input: the request body is not valid JSON.")
        if not isinstance(body, dict):
            return self._pc_error(req, 400, 400056, "Invalid input: the request body must be a JSON object.")
        customer_id = body.get("customerId")
        product_family = body.get("productFamily")
        if not is_guid(customer_id):
            return self._pc_error(req, 400, 900118, f"The customer id '{customer_id}' is invalid.")
        if not isinstance(product_family, str) or product_family.lower() != "azure":
            return self._pc_error(req, 400, 400056, f"Invalid input: productFamily '{product_family}' is not valid.")
        assert isinstance(customer_id, str)

        request_id = (req.headers.get("MS-RequestId") or "").lower()
        if operation == "create" and request_id:
            with self._lock:
                replayed = self._refusals.get(request_id) if self._replay_refusals else None
            if replayed is not None:
                return replayed
        forced = self._take_customer_error(customer_id, operation)
        if forced is not None:
            return self._remember_refusal(
                req, operation, self._pc_error(req, forced.status, forced.code, forced.description, forced.data)
            )
        throttled = self._take_throttle(customer_id)
        if throttled is not None:
            return self._throttled_response(req, throttled)

        if operation == "create":
            return self._remember_refusal(req, operation, self._create(req, customer_id, product_family))
        if operation == "eligibility":
            return self._eligibility(req, customer_id, product_family)
        assert m is not None
        return self._status(req, m.group(1), customer_id)

    def _directory_answer(self, req: RecordedRequest) -> Response | None:
        """The customer list and a customer's subscriptions (GET); None for any other path."""
        subscriptions = SUBSCRIPTIONS_PATH.match(req.path)
        if subscriptions is None and not CUSTOMERS_PATH.match(req.path):
            return None
        if req.method != "GET":
            return self._json(
                req, 405, {"Message": f"The requested resource does not support http method '{req.method}'."}
            )
        unauthorized = self._check_auth(req)
        if unauthorized is not None:
            return unauthorized
        try:
            if subscriptions is not None:
                body = self.directory.subscriptions(subscriptions.group(1))
            else:
                body = self.directory.customers_page(req.query, req.headers.get(CONTINUATION_HEADER))
        except DirectoryError as exc:
            if exc.status == 429:
                return self._throttled_response(req, exc.retry_after or "1")
            extra = {"Retry-After": exc.retry_after} if exc.retry_after else None
            return self._pc_error(req, exc.status, exc.code, exc.description, extra=extra)
        return self._json(req, 200, body)

    def _take_customer_error(self, customer_id: str, operation: str) -> CustomerError | None:
        """The scripted error for this call, or None; one with calls left counts this one."""
        with self._lock:
            forced = self._customer_errors.get(customer_id.lower())
            if forced is None or (forced.operations is not None and operation not in forced.operations):
                return None
            if forced.remaining is not None:
                forced.remaining -= 1
                if forced.remaining <= 0:
                    del self._customer_errors[customer_id.lower()]
            return forced

    def _remember_refusal(self, req: RecordedRequest, operation: str, response: Response) -> Response:
        """Keep a create's refusal (a 4xx other than 401/429) by its MS-RequestId, for :meth:`replay_refusals`."""
        request_id = (req.headers.get("MS-RequestId") or "").lower()
        if operation == "create" and request_id and 400 <= response.status < 500 and response.status not in (401, 429):
            with self._lock:
                if self._replay_refusals:
                    self._refusals[request_id] = response
        return response

    def _take_throttle(self, customer_id: str) -> str | None:
        """The Retry-After of a scripted 429 for this call, or None."""
        with self._lock:
            throttle = self._throttled.get(customer_id.lower())
            if throttle is None:
                return None
            retry_after, calls = throttle
            if calls is not None:
                if calls <= 1:
                    del self._throttled[customer_id.lower()]
                else:
                    self._throttled[customer_id.lower()] = (retry_after, calls - 1)
            return retry_after

    def _throttled_response(self, req: RecordedRequest, retry_after: str) -> Response:
        with self._lock:
            self.customer_throttled += 1
        body = {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {retry_after} seconds."}
        return self._json(req, 429, body, {"Retry-After": retry_after})

    def _check_auth(self, req: RecordedRequest) -> Response | None:
        auth = req.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            valid = self.entra.is_valid_access_token(token, PARTNER_CENTER_RESOURCE) if self.entra is not None else True
            if valid:
                return None
        # Partner Center's front door: its error body (codes as strings) and an OAuth challenge.
        code, description = TOKEN_INVALID if scheme.lower() == "bearer" and token else TOKEN_MISSING
        return self._pc_error(
            req, 401, code, description, extra={"WWW-Authenticate": f"OAuth realm=urn:cpsvc:cpid:{uuid.uuid4()}"}
        )

    def _running_upgrade(self, customer_id: str, product_family: str) -> Upgrade | None:
        # Running: a running state, or the state it shows while running (which may be one the app does not know).
        return self._upgrade_in(customer_id, product_family, lambda upgrade: upgrade.running)

    def _completed_upgrade(self, customer_id: str, product_family: str) -> Upgrade | None:
        """The customer's upgrade that has completed: Partner Center refuses another one (900110), for good."""
        return self._upgrade_in(customer_id, product_family, lambda upgrade: upgrade.status.lower() == "completed")

    def _upgrade_in(self, customer_id: str, product_family: str, matches: Callable[[Upgrade], bool]) -> Upgrade | None:
        for upgrade in self.upgrades.values():
            if (
                upgrade.customer_id.lower() == customer_id.lower()
                and upgrade.product_family.lower() == product_family.lower()
                and matches(upgrade)
            ):
                return upgrade
        return None

    def _create(self, req: RecordedRequest, customer_id: str, product_family: str) -> Response:
        request_id = req.headers.get("MS-RequestId")
        with self._lock:
            ineligible = self._ineligible.get(customer_id.lower())
            if ineligible is not None:
                reason, status, code = ineligible
                return self._pc_error(req, status, code, reason)
            if request_id and request_id.lower() in self._by_request_id:
                upgrade_id = self._by_request_id[request_id.lower()]
            else:
                completed = self._completed_upgrade(customer_id, product_family)
                if completed is not None:
                    return self._pc_error(
                        req, 400, 900110, f"{ALREADY_UPGRADED_REASON} (upgrade {completed.upgrade_id})"
                    )
                running = self._running_upgrade(customer_id, product_family)
                if running is not None:
                    return self._pc_error(
                        req,
                        409,
                        900109,
                        f"An upgrade is already in progress for customer {customer_id} (upgrade {running.upgrade_id}).",
                    )
                outcome = self._outcomes.get(customer_id.lower(), COMPLETED)
                interim = self._interim.get(customer_id.lower(), "InProgress")
                upgrade = Upgrade(
                    str(uuid.uuid4()),
                    customer_id,
                    product_family,
                    request_id,
                    req.headers.get("MS-CorrelationId"),
                    status=interim,
                    complete_after=self._complete_after,
                    complete_at=None
                    if self._complete_after_seconds is None
                    else time.time() + self._complete_after_seconds,
                    outcome=outcome,
                    interim_status=interim,
                    subscriptions=[_new_subscription() for _ in outcome.line_items or (None,)],
                )
                self.upgrades[upgrade.upgrade_id.lower()] = upgrade
                self.created_upgrades.append(upgrade.as_record())
                if request_id:
                    self._by_request_id[request_id.lower()] = upgrade.upgrade_id
                upgrade_id = upgrade.upgrade_id
        headers = self._headers(req)
        headers["Location"] = f"productUpgrades/{upgrade_id}"
        headers["Content-Length"] = "0"
        return Response(202, b"", headers)

    def _eligibility(self, req: RecordedRequest, customer_id: str, product_family: str) -> Response:
        """``upgradeId`` names an upgrade "already in place" (the docs' words): a running one, else a completed one."""
        with self._lock:
            ineligible = self._ineligible.get(customer_id.lower())
            running = self._running_upgrade(customer_id, product_family)
            completed = self._completed_upgrade(customer_id, product_family)
        in_place = running or completed  # the docs: upgradeId is set when an upgrade is already in place
        reason = ineligible[0] if ineligible else None
        if reason is None and in_place is not None:
            reason = "An upgrade is already in progress." if running else ALREADY_UPGRADED_REASON
        body: dict[str, Any] = {
            "customerId": customer_id,
            "productFamily": product_family,
            "isEligible": ineligible is None and in_place is None,
            "upgradeId": in_place.upgrade_id if in_place is not None else None,
            "reason": reason,
            "attributes": {"objectType": "ProductUpgradesEligibility"},
        }
        return self._json(req, 200, body)

    @staticmethod
    def _ends_now(upgrade: Upgrade) -> bool:
        by_polls = upgrade.complete_after is not None and upgrade.polls > upgrade.complete_after
        by_time = upgrade.complete_at is not None and time.time() >= upgrade.complete_at
        return by_polls or by_time

    @staticmethod
    def _end(upgrade: Upgrade) -> None:
        outcome = upgrade.outcome
        upgrade.status = outcome.status
        upgrade.complete_after = upgrade.complete_at = None
        upgrade.error_details = outcome.error_details
        upgrade.line_item_error_details = outcome.line_item_error_details
        upgrade.line_outcomes = outcome.line_items
        if outcome.status.lower() == "completed":
            upgrade.upgraded_date = upgrade.upgraded_date or datetime.now(UTC).isoformat()

    def _status(self, req: RecordedRequest, upgrade_id: str, customer_id: str) -> Response:
        with self._lock:
            upgrade = self.upgrades.get(upgrade_id.lower())
            if upgrade is None or upgrade.customer_id.lower() != customer_id.lower():
                return self._pc_error(req, 404, 900106, f"The upgrade '{upgrade_id}' was not found.")
            upgrade.polls += 1
            self.status_polls += 1
            if self._ends_now(upgrade):
                self._end(upgrade)
            body: dict[str, Any] = {
                "id": upgrade.upgrade_id,
                "productFamily": upgrade.product_family,
                "status": upgrade.status,
                "lineItems": self._line_items(upgrade),
                "attributes": {"objectType": "ProductUpgradesStatus"},
            }
            if upgrade.error_details is not None:
                body["errorDetails"] = upgrade.error_details
        return self._json(req, 200, body)

    @staticmethod
    def _line_items(upgrade: Upgrade) -> list[dict[str, Any]]:
        """One per subscription, as in the docs' example; ``errorDetails`` only where there is an error."""
        ends = upgrade.line_outcomes or tuple(
            LineOutcome(upgrade.status, upgrade.line_item_error_details) for _ in upgrade.subscriptions
        )
        items = []
        for (subscription_id, plan_id), end in zip(upgrade.subscriptions, ends, strict=False):
            item: dict[str, Any] = {
                "sourceProduct": {"id": subscription_id, "name": SOURCE_PRODUCT_NAME},
                "targetProduct": {"id": plan_id, "name": TARGET_PRODUCT_NAME},
                "upgradedDate": upgrade.upgraded_date if end.status.lower() == "completed" else None,
                "status": end.status,
            }
            if end.error_details is not None:
                item["errorDetails"] = end.error_details
            items.append(item)
        return items
