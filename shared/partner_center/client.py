"""The Partner Center REST client for product upgrades: one method per endpoint, typed results and errors.

It knows the wire (paths, headers, ``Location``, error bodies) and nothing of triggers. Response parsing
is pure (:func:`parse_location`, :func:`error_from_response`), so it is testable on canned responses.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from shared import signals
from shared.errors import PartnerCenterError, UpstreamUnavailableError
from shared.logs import redact
from shared.models import (
    MAX_DESCRIPTION,
    Customer,
    ProductUpgradeCreated,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
    Subscription,
)
from shared.partner_center.pace import PaceLimiter
from shared.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

APPLICATION_NAME = "partner-center-product-upgrades-functions"
LOCALE = "en-US"
#: Partner Center's headers page lists ``MS-Contract-Version`` as required.
CONTRACT_VERSION = "v1"
#: Largest ``data`` of an error body kept (as JSON text): it travels on in problem details and outcomes.
MAX_ERROR_DATA = 4096

#: Customers per page of ``GET /v1/customers``. Partner Center's REST page documents no ceiling (its example asks
#: for 40); its PowerShell module notes that one call returns at most 500, so we ask for that many.
CUSTOMERS_PAGE_SIZE = 500

#: Headers this client sets itself: a ``links.next`` entry never replaces them.
_OWN_HEADERS = frozenset(
    {
        "authorization",
        "accept",
        "content-type",
        "content-length",
        "host",
        "ms-requestid",
        "ms-correlationid",
        "x-locale",
        "ms-partnercenter-application",
    }
)


class AccessTokens(Protocol):
    def get_token(self, *, force_refresh: bool = False, stale_token: str | None = None) -> str: ...


class PartnerCenterClient:
    """Calls ``{base_url}/v1/...`` (product upgrades, the customer list, a customer's subscriptions) with an App+User
    token, under one retry policy and one pace."""

    def __init__(
        self,
        *,
        base_url: str,
        session: requests.Session,
        tokens: AccessTokens,
        policy: RetryPolicy,
        application_name: str = APPLICATION_NAME,
        locale: str = LOCALE,
        pace: PaceLimiter | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        # The runtime builds one client per process, and one pace limiter, shared with the other instances.
        self.pace = pace or PaceLimiter()
        self._session = session
        self._tokens = tokens
        self._policy = policy
        self._application_name = application_name
        self._locale = locale

    def create_upgrade(
        self, request: ProductUpgradeRequest, *, request_id: str, correlation_id: str
    ) -> ProductUpgradeCreated:
        """``POST /v1/productupgrades``: Partner Center answers 202 and the new upgrade's id in ``Location``."""
        response = self._send("/v1/productupgrades", request.to_json(), request_id, correlation_id)
        upgrade_id = parse_location(response.headers.get("Location"))
        if upgrade_id is None:
            raise UpstreamUnavailableError(
                f"Partner Center answered {response.status_code} without a usable Location header "
                f"(MS-RequestId {request_id})"
            )
        return ProductUpgradeCreated(upgrade_id, request.customer_id, request.product_family)

    def check_eligibility(
        self, request: ProductUpgradeRequest, *, request_id: str, correlation_id: str
    ) -> ProductUpgradesEligibility:
        """``POST /v1/productUpgrades/eligibility``."""
        response = self._send("/v1/productUpgrades/eligibility", request.to_json(), request_id, correlation_id)
        return ProductUpgradesEligibility.from_json(_json_object(response), request)

    def get_status(
        self, upgrade_id: str, request: ProductUpgradeRequest, *, request_id: str, correlation_id: str
    ) -> ProductUpgradesStatus:
        """``POST /v1/productUpgrades/{upgrade_id}/status`` (a POST, as Partner Center documents it)."""
        path = f"/v1/productUpgrades/{quote(upgrade_id, safe='')}/status"
        response = self._send(path, request.to_json(), request_id, correlation_id)
        return ProductUpgradesStatus.from_json(_json_object(response), upgrade_id)

    def list_customers(self, *, correlation_id: str, size: int = CUSTOMERS_PAGE_SIZE) -> Iterator[list[Customer]]:
        """``GET /v1/customers?size=N``, then each page's ``links.next`` until a page has none: one list a page.

        Each page is one call (its own ``MS-RequestId``, the same on its retries) through the same retry policy
        and pace as every other call. An item without an ``id`` is logged and left out: it cannot be asked about.
        """
        for items in self._pages(f"/v1/customers?size={size}", correlation_id):
            customers = [Customer.from_json(item) for item in items]
            if None in customers:
                log.warning("Partner Center listed %d customer(s) without an id", customers.count(None))
            yield [customer for customer in customers if customer is not None]

    def get_subscriptions(self, customer_id: str, *, correlation_id: str) -> list[Subscription]:
        """``GET /v1/customers/{customer_id}/subscriptions``: every subscription of the customer (every page, should
        Partner Center ever page them)."""
        path = f"/v1/customers/{quote(customer_id, safe='')}/subscriptions"
        return [Subscription.from_json(item) for items in self._pages(path, correlation_id) for item in items]

    def _pages(self, target: str, correlation_id: str) -> Iterator[list[Any]]:
        """The ``items`` of a collection, page by page, following ``links.next`` (its uri and its headers)."""
        headers: dict[str, str] = {}
        followed: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        while True:
            request_id = str(uuid.uuid4())
            body = _json_object(self._send_get(target, headers, request_id, correlation_id))
            items = body.get("items")
            if not isinstance(items, list):
                raise UpstreamUnavailableError(
                    f"Partner Center answered a collection without items (MS-RequestId {request_id})"
                )
            yield items
            following = next_page(body, self._base_url)
            if following is None:
                return
            target, headers = following
            seen = (target, tuple(sorted(headers.items())))
            if seen in followed:
                # A continuation that comes back unchanged would page forever.
                raise UpstreamUnavailableError(f"Partner Center sent the same next page twice ({target.split('?')[0]})")
            followed.add(seen)

    def _send(self, path: str, body: dict[str, Any], request_id: str, correlation_id: str) -> requests.Response:
        """POST ``body`` as JSON to ``path``."""
        data = json.dumps(body).encode()
        customer = _customer_of(path, body)
        return self._call("POST", self._base_url + path, data, {}, request_id, correlation_id, customer)

    def _send_get(self, target: str, extra: dict[str, str], request_id: str, correlation_id: str) -> requests.Response:
        """GET ``target`` (a path and query under the base URL) with ``extra`` headers (a continuation token)."""
        customer = _customer_of(target, None)
        return self._call("GET", self._base_url + target, None, extra, request_id, correlation_id, customer)

    def _call(
        self,
        method: str,
        url: str,
        data: bytes | None,
        extra: dict[str, str],
        request_id: str,
        correlation_id: str,
        customer: str | None,
    ) -> requests.Response:
        """One call with every documented header; one retry with a fresh token when our token is refused."""
        token = self._tokens.get_token()
        for retry_with_fresh_token in (True, False):
            headers = {
                **extra,
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "MS-RequestId": request_id,
                "MS-CorrelationId": correlation_id,
                "MS-Contract-Version": CONTRACT_VERSION,
                "X-Locale": self._locale,
                "MS-PartnerCenter-Application": self._application_name,
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            response = self._attempt(method, url, data, headers, customer, request_id, correlation_id)
            if 300 <= response.status_code < 400:
                # Never followed: a redirect would carry our token (and the request) to wherever it points.
                raise UpstreamUnavailableError(
                    f"Partner Center answered {response.status_code}, a redirect, which is not followed "
                    f"(MS-RequestId {request_id})"
                )
            if response.status_code < 400:
                return response
            error = error_from_response(response, request_id=request_id, correlation_id=correlation_id)
            if error.token_rejected and retry_with_fresh_token:
                log.warning("Partner Center refused our token (%d); retrying once with a new one", error.status)
                token = self._tokens.get_token(force_refresh=True, stale_token=token)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        customer: str | None,
        request_id: str,
        correlation_id: str,
    ) -> requests.Response:
        """One request with the retry policy's attempts, each at the pace of Partner Center calls."""
        operation = operation_of(url)

        def attempt(timeout: tuple[float, float]) -> requests.Response:
            response = self.pace.call(customer, lambda: self._timed(operation, method, url, data, headers, timeout))
            if response.status_code == 429 and self.pace.surfaces(customer):
                # Partner Center holds this customer longer than the caller will wait: say so now, no retry.
                error = error_from_response(response, request_id=request_id, correlation_id=correlation_id)
                error.customer_throttled = True
                raise error
            return response

        return self._policy.send(attempt, service="Partner Center")

    def _timed(
        self,
        operation: str,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        timeout: tuple[float, float],
    ) -> requests.Response:
        """One attempt, signalled with its latency and answer (a 429 as throttling)."""
        started = time.monotonic()
        response = self._session.request(
            method, url, data=data, headers=headers, timeout=timeout, allow_redirects=False
        )
        signals.partner_center_call(
            operation, response.status_code, time.monotonic() - started, response.headers.get("Retry-After")
        )
        return response


def operation_of(url: str) -> str:
    """The Partner Center operation a URL calls, as the signals name it: ``create``, ``eligibility``, ``status``,
    ``customers``, ``subscriptions`` (``other`` for anything else)."""
    segments = [segment.lower() for segment in urlsplit(url).path.split("/") if segment]
    if segments[-1:] == ["productupgrades"]:
        return "create"
    if segments[-2:-1] == ["productupgrades"] and segments[-1] == "eligibility":
        return "eligibility"
    if len(segments) >= 3 and segments[-3] == "productupgrades" and segments[-1] == "status":
        return "status"
    if "customers" in segments:
        return "subscriptions" if segments[-1] == "subscriptions" else "customers"
    return "other"


def _customer_of(path: str, body: dict[str, Any] | None) -> str | None:
    """The customer a call is about, for the pace's per-customer holds: the body's ``customerId``, else the
    ``/v1/customers/{id}/...`` segment of the path; None for a call about no customer (the customer list)."""
    if body is not None:
        customer = body.get("customerId")
        if isinstance(customer, str) and customer:
            return customer
    segments = [segment for segment in path.split("?", 1)[0].split("/") if segment]
    for index, segment in enumerate(segments[:-1]):
        if segment.lower() == "customers":
            return segments[index + 1]
    return None


def parse_location(location: str | None) -> str | None:
    """The upgrade id from a ``Location`` header: relative (``productUpgrades/<id>``), with a leading slash
    (``/v1/productUpgrades/<id>``) or absolute. None when there is none to find."""
    if not location or not location.strip():
        return None
    path = urlsplit(location.strip()).path
    segments = [segment for segment in path.split("/") if segment]
    for index, segment in enumerate(segments):
        if segment.lower() == "productupgrades" and index + 1 < len(segments):
            upgrade_id = segments[index + 1]
            return upgrade_id if upgrade_id.lower() not in ("eligibility", "status") else None
    return None


def next_page(body: dict[str, Any], base_url: str) -> tuple[str, dict[str, str]] | None:
    """Where a collection's next page is: (path and query under ``base_url``, headers to send), or None on the last.

    Partner Center gives ``links.next`` as ``{"uri", "method": "GET", "headers": [{"key":
    "MS-ContinuationToken", "value"}]}``. Its uri is relative and may leave out the version (``/customers?...``
    as well as ``/v1/customers?...``): as Partner Center's .NET SDK does, ``/v1`` is put in front when missing.
    An absolute uri is followed only to the base URL's own host: the token never goes anywhere else.
    """
    links = body.get("links")
    link = links.get("next") if isinstance(links, dict) else None
    if link is None:
        return None
    uri = link.get("uri") if isinstance(link, dict) else None
    if not isinstance(uri, str) or not uri.strip():
        raise UpstreamUnavailableError("Partner Center's next page link has no uri")
    method = link.get("method")
    if isinstance(method, str) and method.strip() and method.strip().upper() != "GET":
        raise UpstreamUnavailableError(f"Partner Center's next page link asks for {method.strip().upper()}, not GET")
    parts = urlsplit(uri.strip())
    base = urlsplit(base_url)
    if (parts.scheme or parts.netloc) and (parts.scheme.lower(), parts.netloc.lower()) != (
        base.scheme.lower(),
        base.netloc.lower(),
    ):
        raise UpstreamUnavailableError("Partner Center's next page link points to another host; it is not followed")
    path = "/" + parts.path.lstrip("/")
    if not path.lower().startswith("/v1/"):
        path = "/v1" + path
    headers: dict[str, str] = {}
    listed = link.get("headers")
    for header in listed if isinstance(listed, list) else []:
        key = header.get("key") if isinstance(header, dict) else None
        value = header.get("value") if isinstance(header, dict) else None
        if not isinstance(key, str) or not isinstance(value, str) or not value.isprintable():
            continue  # a value with a line break would forge a header of its own
        if key.strip() and key.strip().lower() not in _OWN_HEADERS:
            headers[key.strip()] = value
    return (f"{path}?{parts.query}" if parts.query else path), headers


def error_from_response(
    response: requests.Response, *, request_id: str | None = None, correlation_id: str | None = None
) -> PartnerCenterError:
    """Partner Center's error, typed: ``{"code", "description", "data", "source"}`` or the 429 shape
    ``{"statusCode", "message"}``.

    Only Partner Center's JSON ``description`` (else ``message``) travels on to callers, up to 1,024
    characters, with its ``data`` (a list, up to :data:`MAX_ERROR_DATA` characters of JSON) and ``source``.
    Any other body (an HTML page from a gateway, with internal names) stays out of problem details and
    results: it is logged at debug, redacted.
    """
    code: str | None = None
    description = ""
    data: list[object] = []
    source: str | None = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw_code = body.get("code")
        if raw_code is not None and raw_code != "" and not isinstance(raw_code, bool | dict | list):
            code = str(raw_code)
        text = body.get("description") or body.get("message")
        description = text if isinstance(text, str) else ""
        data = _error_data(body.get("data"))
        raw_source = body.get("source")
        source = raw_source[:256] if isinstance(raw_source, str) and raw_source else None
    elif response.text.strip():
        log.debug(
            "Partner Center answered %d with a body that is not its JSON error (MS-RequestId %s): %s",
            response.status_code,
            request_id,
            redact(response.text.strip()[:MAX_DESCRIPTION]),
        )
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return PartnerCenterError(
        response.status_code,
        code,
        description[:MAX_DESCRIPTION],
        retry_after=math.ceil(retry_after) if retry_after is not None else None,
        correlation_id=response.headers.get("MS-CorrelationId") or correlation_id,
        request_id=response.headers.get("MS-RequestId") or request_id,
        data=data,
        source=source,
    )


def _error_data(value: object) -> list[object]:
    """An error body's ``data``: a list, kept when its JSON is small enough to pass on; else nothing."""
    if not isinstance(value, list) or not value:
        return []
    return value if len(json.dumps(value)) <= MAX_ERROR_DATA else []


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamUnavailableError(f"Partner Center answered {response.status_code} with a body that is not JSON")
    return body
