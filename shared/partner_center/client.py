"""The Partner Center REST client for product upgrades: one method per endpoint, typed results and errors.

It knows the wire (paths, headers, ``Location``, error bodies) and nothing of triggers. Response parsing
is pure (:func:`parse_location`, :func:`error_from_response`), so it is testable on canned responses.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from shared.errors import PartnerCenterError, UpstreamUnavailableError
from shared.logs import redact
from shared.models import (
    MAX_DESCRIPTION,
    ProductUpgradeCreated,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
)
from shared.partner_center.throttle import AdaptiveConcurrencyLimit
from shared.retry import RetryPolicy, parse_retry_after

log = logging.getLogger(__name__)

APPLICATION_NAME = "partner-center-product-upgrades-functions"
LOCALE = "en-US"


class AccessTokens(Protocol):
    def get_token(self, *, force_refresh: bool = False, stale_token: str | None = None) -> str: ...


class PartnerCenterClient:
    """Calls ``{base_url}/v1/productUpgrades...`` with an App+User token, under one retry policy."""

    def __init__(
        self,
        *,
        base_url: str,
        session: requests.Session,
        tokens: AccessTokens,
        policy: RetryPolicy,
        application_name: str = APPLICATION_NAME,
        locale: str = LOCALE,
        limit: AdaptiveConcurrencyLimit | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        # One per client, and the runtime builds one client per process: the process's share of the throttle.
        self._limit = limit or AdaptiveConcurrencyLimit()
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

    def _send(self, path: str, body: dict[str, Any], request_id: str, correlation_id: str) -> requests.Response:
        """POST with every documented header; one retry with a fresh token when our token is refused."""
        data = json.dumps(body).encode()
        url = self._base_url + path
        token = self._tokens.get_token()
        for retry_with_fresh_token in (True, False):
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "MS-RequestId": request_id,
                "MS-CorrelationId": correlation_id,
                "X-Locale": self._locale,
                "MS-PartnerCenter-Application": self._application_name,
            }
            response = self._post(url, data, headers)
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

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> requests.Response:
        def attempt(timeout: tuple[float, float]) -> requests.Response:
            return self._limit.call(
                lambda: self._session.post(url, data=data, headers=headers, timeout=timeout, allow_redirects=False)
            )

        return self._policy.send(attempt, service="Partner Center")


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


def error_from_response(
    response: requests.Response, *, request_id: str | None = None, correlation_id: str | None = None
) -> PartnerCenterError:
    """Partner Center's error, typed: ``{"code", "description"}`` or the 429 shape ``{"statusCode", "message"}``.

    Only Partner Center's JSON ``description`` (else ``message``) travels on to callers, up to 1,024
    characters. Any other body (an HTML page from a gateway, with internal names) stays out of problem
    details and results: it is logged at debug, redacted.
    """
    code: str | None = None
    description = ""
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
    )


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamUnavailableError(f"Partner Center answered {response.status_code} with a body that is not JSON")
    return body
