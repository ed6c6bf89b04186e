"""The HTTP adapter: ``azure.functions.HttpRequest`` in, ``HttpResponse`` out; errors as problem+json."""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from shared import logs
from shared.errors import CampaignNotFoundError, PartnerCenterError, ProductUpgradeError, ValidationError
from shared.functions.health import check_health
from shared.models import (
    DEFAULT_PRODUCT_FAMILY,
    MAX_BODY_BYTES,
    ProductUpgradeRequest,
    parse_caller_id,
    parse_guid,
    parse_product_family,
)
from shared.retry import time_budget
from shared.settings import PUBLIC_URL_SETTING, WEBSITE_HOSTNAME_VARIABLE, hosting
from shared.store.ledger import MAX_PAGE_SIZE
from shared.store.records import UPGRADE_STATES, utc_now
from shared.upgrades import campaigns
from shared.upgrades.runtime import get_runtime
from shared.upgrades.workflow import OperationIds, UpgradeOrder, request_id_for

log = logging.getLogger(__name__)

#: One HTTP invocation gives up within this many seconds in all (Logic Apps waits 120 s, webhooks 30-60 s).
HTTP_TIME_BUDGET_SECONDS = 45.0
#: Upgrades in a page of the listing when the caller does not say.
DEFAULT_PAGE_SIZE = 100
#: Retry-After we send on 503 when Partner Center gave none.
DEFAULT_RETRY_AFTER_SECONDS = 30
PROBLEM_TYPE_BASE = "urn:partner-center-product-upgrades:problem:"
#: host.json's ``extensions.http.routePrefix``: what ``PRODUCT_UPGRADE_PUBLIC_URL`` stands for.
ROUTE_PREFIX = "api"
_ASCII_DIGITS = re.compile(r"[0-9]{1,9}")


def create_upgrade(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/productupgrades`` -> 202 with the upgrade id and an absolute ``Location`` to its status."""

    def run(correlation_id: str) -> func.HttpResponse:
        body = _json_body(req)
        request = ProductUpgradeRequest.from_json(body)
        assert isinstance(body, dict)  # from_json refuses anything else
        campaign = campaigns.optional_campaign(body)
        key = _header(req, "Idempotency-Key")
        ids = (
            OperationIds.of_caller(request_id_for("idempotency-key", key), correlation_id)
            if key
            else OperationIds.new(correlation_id)
        )
        logs.bind(requestId=ids.request_id)
        # Validation comes first: a bad request never needs settings, secrets or Partner Center.
        order = UpgradeOrder(request, ids, caller_request_id=key, campaign=campaign)
        created = get_runtime().workflow.create(order)
        body = {
            "upgradeId": created.upgrade_id,
            "customerId": created.customer_id,
            "productFamily": created.product_family,
            "status": "accepted",
        }
        location = status_url(req, created.upgrade_id, request)
        return _json(202, body, correlation_id, {"Location": location})

    return _handle(req, run)


def check_eligibility(req: func.HttpRequest) -> func.HttpResponse:
    """``POST /api/productupgrades/eligibility`` -> 200 with Partner Center's eligibility answer."""

    def run(correlation_id: str) -> func.HttpResponse:
        body = _json_body(req)
        request = ProductUpgradeRequest.from_json(body)
        assert isinstance(body, dict)  # from_json refuses anything else
        campaigns.optional_campaign(body)  # the create's body: a bad campaign is refused here too, else unused
        eligibility = get_runtime().workflow.check_eligibility(request, OperationIds.new(correlation_id))
        return _json(200, eligibility.to_json(), correlation_id)

    return _handle(req, run)


def get_status(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/productupgrades/{upgradeId}?customerId=`` -> 202 + Retry-After while running, 200 when ended."""

    def run(correlation_id: str) -> func.HttpResponse:
        # Partner Center issues GUIDs; anything else is refused before any outbound call.
        upgrade_id = parse_guid(req.route_params.get("upgradeId"), "upgradeId")
        request = ProductUpgradeRequest(
            customer_id=parse_guid(req.params.get("customerId"), "customerId"),
            product_family=parse_product_family(req.params.get("productFamily")),
        )
        runtime = get_runtime()
        status = runtime.workflow.get_status(upgrade_id, request, OperationIds.new(correlation_id))
        body = {"upgradeId": upgrade_id, "customerId": request.customer_id, **status.to_json()}
        if not status.is_running:
            return _json(200, body, correlation_id)
        # Still running: the asynchronous request-reply pattern Logic Apps follows by default.
        headers = {"Location": status_url(req, upgrade_id, request), "Retry-After": str(runtime.poll_interval_seconds)}
        return _json(202, body, correlation_id, headers)

    return _handle(req, run)


def list_upgrades(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/productupgrades?state=&customerId=&campaign=&top=&continuationToken=`` -> a page of the ledger's
    upgrades."""

    def run(correlation_id: str) -> func.HttpResponse:
        state = _query(req, "state")
        if state is not None and state not in UPGRADE_STATES:
            raise ValidationError(f"state must be one of {', '.join(UPGRADE_STATES)}")
        customer = _query(req, "customerId")
        campaign = req.params.get("campaign") or None  # as given: a space is a character of a name
        top = _query(req, "top")
        # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and other scripts' digits.
        if top is not None and not (_ASCII_DIGITS.fullmatch(top) and 1 <= int(top) <= MAX_PAGE_SIZE):
            raise ValidationError(f"top must be a whole number from 1 to {MAX_PAGE_SIZE}")
        page = get_runtime().ledger.list_upgrades(
            state=state,
            customer_id=parse_guid(customer, "customerId") if customer is not None else None,
            campaign_key=campaigns.parse_campaign(campaign).key if campaign is not None else None,
            top=int(top) if top is not None else DEFAULT_PAGE_SIZE,
            continuation_token=_query(req, "continuationToken"),
        )
        body = {"items": [item.to_json() for item in page.items], "continuationToken": page.continuation_token}
        return _json(200, body, correlation_id)

    return _handle(req, run)


def campaign_summary(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/campaigns/{name}`` -> the campaign's counts, pace and estimated end, from counts kept per campaign
    (a handful of rows read, never the campaign's records)."""

    def run(correlation_id: str) -> func.HttpResponse:
        campaign = campaigns.parse_campaign(req.route_params.get("name"), "the campaign name")
        counts = get_runtime().ledger.campaign_counts(campaign.key)
        if counts is None:
            raise CampaignNotFoundError(campaign.name)
        return _json(200, campaigns.summary(counts, utc_now()), correlation_id)

    return _handle(req, run)


def health(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health`` (anonymous): ``{"status": "healthy" | "unhealthy"}`` and nothing else."""
    status, body = _health()
    return _json_plain(status, {"status": body["status"]})


def health_details(req: func.HttpRequest) -> func.HttpResponse:
    """``GET /api/health/details`` (function key): setting names present or missing, and the token check."""
    return _json_plain(*_health())


def _health() -> tuple[int, dict[str, Any]]:
    try:
        return check_health()
    except Exception:
        log.exception("Health check failed unexpectedly")
        return 503, {"status": "unhealthy", "error": "internal_error"}


def _json_plain(status: int, body: dict[str, Any]) -> func.HttpResponse:
    headers = {"Cache-Control": "no-store"}
    return func.HttpResponse(
        json.dumps(body), status_code=status, headers=headers, mimetype="application/json", charset="utf-8"
    )


def status_url(req: func.HttpRequest, upgrade_id: str, request: ProductUpgradeRequest) -> str:
    """Absolute URL of an upgrade's status route, under :func:`api_base_url`.

    Carries ``customerId`` (and ``productFamily`` when not Azure), and the caller's ``code`` query key when
    it authenticated that way; a key sent in ``x-functions-key`` is never copied into a URL.
    """
    query: dict[str, str] = {"customerId": request.customer_id}
    if request.product_family != DEFAULT_PRODUCT_FAMILY:
        query["productFamily"] = request.product_family
    base, chosen_by_the_app = _api_base(req)
    code = req.params.get("code")
    # The key goes only to a host the app chose (or a local run's): outside local runs, a base taken from the
    # request's own Host could be a forged one, and a poller would carry the key there.
    if code and (chosen_by_the_app or hosting().local_run):
        query["code"] = code
    return f"{base}/productupgrades/{upgrade_id}?{urlencode(query)}"


def api_base_url(req: func.HttpRequest) -> str:
    """What stands for the app's ``/api``: ``PRODUCT_UPGRADE_PUBLIC_URL``, else ``https://{WEBSITE_HOSTNAME}/api``
    in Azure, else the request's own scheme and host (local runs; hosting without either setting, where
    ``Location`` then carries no key).

    The client's Host (or X-Forwarded-Host) never chooses where a poller is sent with a key.
    """
    return _api_base(req)[0]


def _api_base(req: func.HttpRequest) -> tuple[str, bool]:
    """:func:`api_base_url`, and whether the app chose it (a setting, the platform) rather than the request."""
    place = hosting()
    if place.public_url:
        return place.public_url, True
    if place.platform_host is not None:
        return f"https://{place.platform_host}/{ROUTE_PREFIX}", True
    own = urlsplit(str(req.url))
    return f"{own.scheme}://{own.netloc}/{ROUTE_PREFIX}", False


def check_location_base() -> None:
    """Said at start-up: outside local runs with neither ``PRODUCT_UPGRADE_PUBLIC_URL`` nor ``WEBSITE_HOSTNAME``
    (container hosting), ``Location`` comes from the request's own host and so carries no ``code`` key. Reads
    only the environment and never raises: importing the function app needs no settings."""
    try:
        place = hosting()
    except ProductUpgradeError:
        return  # a malformed PRODUCT_UPGRADE_PUBLIC_URL is named by the first call that needs it
    if place.public_url is None and place.platform_host is None and not place.local_run:
        log.warning(
            "Neither %s nor %s is set: Location headers are built from each request's own host and carry no "
            "code key, so a poller must send its key itself; set %s to the app's public URL",
            PUBLIC_URL_SETTING,
            WEBSITE_HOSTNAME_VARIABLE,
            PUBLIC_URL_SETTING,
        )


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    correlation_id: str,
    partner_center_error_code: str | None = None,
    retry_after: int | None = None,
    retryable: bool = False,
    partner_center_error: PartnerCenterError | None = None,
) -> func.HttpResponse:
    """An RFC 9457 ``application/problem+json`` response; ``retryable`` says the same request may succeed later.
    ``partner_center_error``: its ``data`` and ``source`` go along, when it gave them."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "correlationId": correlation_id,
        "retryable": retryable,
    }
    if partner_center_error_code is not None:
        body["partnerCenterErrorCode"] = partner_center_error_code
    if partner_center_error is not None and partner_center_error.data:
        body["partnerCenterErrorData"] = partner_center_error.data
    if partner_center_error is not None and partner_center_error.source:
        body["partnerCenterErrorSource"] = partner_center_error.source
    headers = {"MS-CorrelationId": correlation_id}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return func.HttpResponse(
        json.dumps(body), status_code=status, headers=headers, mimetype="application/problem+json", charset="utf-8"
    )


def _handle(req: func.HttpRequest, run: Callable[[str], func.HttpResponse]) -> func.HttpResponse:
    correlation_id = str(uuid.uuid4())
    try:
        correlation_id = _header(req, "MS-CorrelationId") or correlation_id
        with logs.operation(correlationId=correlation_id), time_budget(HTTP_TIME_BUDGET_SECONDS):
            return run(correlation_id)
    except ProductUpgradeError as exc:
        with logs.operation(correlationId=correlation_id):
            return _problem_for(exc, correlation_id)
    except Exception:
        log.exception("Unexpected failure handling %s %s (correlation %s)", req.method, _path(req), correlation_id)
        return problem(
            500,
            "Internal error",
            "An unexpected error occurred; quote the correlation id to the operator.",
            code="internal_error",
            correlation_id=correlation_id,
        )


def _problem_for(exc: ProductUpgradeError, correlation_id: str) -> func.HttpResponse:
    status = exc.http_status
    retry_after = exc.retry_after
    if status == 503:
        retry_after = max(1, math.ceil(retry_after)) if retry_after is not None else DEFAULT_RETRY_AFTER_SECONDS
    log_level = logging.WARNING if status >= 500 else logging.INFO
    log.log(log_level, "Answering %d (%s): %s (correlation %s)", status, exc.code, exc.message, correlation_id)
    return problem(
        status,
        exc.title,
        exc.message,
        code=exc.code,
        correlation_id=correlation_id,
        partner_center_error_code=exc.partner_center_error_code,
        retry_after=retry_after if status == 503 else None,
        retryable=exc.retryable,
        partner_center_error=exc if isinstance(exc, PartnerCenterError) else None,
    )


def _json_body(req: func.HttpRequest) -> object:
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw.strip():
        raise ValidationError("the body is empty; send a JSON object with customerId")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("the body is not valid JSON") from None


def _query(req: func.HttpRequest, name: str) -> str | None:
    value = (req.params.get(name) or "").strip()
    return value or None


def _header(req: func.HttpRequest, name: str) -> str | None:
    value = (req.headers.get(name) or "").strip()
    return parse_caller_id(value, f"header {name}") if value else None


def _json(
    status: int, body: dict[str, Any], correlation_id: str, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    all_headers = {"MS-CorrelationId": correlation_id, **(headers or {})}
    return func.HttpResponse(
        json.dumps(body), status_code=status, headers=all_headers, mimetype="application/json", charset="utf-8"
    )


def _path(req: func.HttpRequest) -> str:
    return urlsplit(str(req.url)).path
