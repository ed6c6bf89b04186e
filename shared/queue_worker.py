"""The queue adapter: one request message in, exactly one result message out (or a raise, for a retry).

Permanent problems (a bad message, a Partner Center refusal about the customer) give a ``rejected``
result at once. Transient ones (throttling, outages, our own configuration) raise so the host retries the
message, until the last allowed attempt, which writes a ``failed`` result with ``retryable: true``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import azure.functions as func

from shared import logs
from shared.errors import ProductUpgradeError, SettingError, ValidationError
from shared.models import MAX_BODY_BYTES, ProductUpgradeRequest, optional_str
from shared.retry import time_budget
from shared.runtime import get_runtime
from shared.settings import DEFAULTS, MAX_ATTEMPTS_SETTING, get_settings
from shared.workflow import OperationIds, request_id_for

log = logging.getLogger(__name__)

ResultStatus = Literal["accepted", "rejected", "failed"]

#: One queue invocation gives up within this many seconds in all, well inside host.json's functionTimeout (5 min).
QUEUE_TIME_BUDGET_SECONDS = 120.0


@dataclass(frozen=True)
class QueueRequest:
    request: ProductUpgradeRequest
    request_id: str | None
    correlation_id: str | None
    check_eligibility: bool = False


def handle(msg: func.QueueMessage) -> str:
    """Process one request message; the JSON result message to write, or raise to have the host retry."""
    with logs.operation(messageId=msg.id or None), time_budget(QUEUE_TIME_BUDGET_SECONDS):
        return _handle(msg)


def _handle(msg: func.QueueMessage) -> str:
    message_id = msg.id or ""
    raw = msg.get_body() or b""
    try:
        parsed = parse_message(raw)
    except ValidationError as exc:
        log.info("Rejecting queue message %s: %s", message_id, exc.message)
        return result_message("rejected", message_id=message_id, error=exc, **_echo_fields(raw))

    request = parsed.request
    ids = OperationIds(
        request_id=request_id_for("queue-request", parsed.request_id)
        if parsed.request_id
        else request_id_for("queue-message", message_id),
        correlation_id=parsed.correlation_id or request_id_for("queue-correlation", message_id),
    )
    logs.bind(requestId=ids.request_id, correlationId=ids.correlation_id)
    fields: dict[str, Any] = {
        "customer_id": request.customer_id,
        "product_family": request.product_family,
        "correlation_id": ids.correlation_id,
        "request_id": parsed.request_id,
        "message_id": message_id,
    }
    try:
        created = get_runtime().workflow.create(request, ids, check_eligibility=parsed.check_eligibility)
    except ProductUpgradeError as exc:
        if not exc.transient:
            log.info("Rejecting queue message %s: %s", message_id, exc.message)
            return result_message("rejected", error=exc, **fields)
        return _transient(msg, exc, fields)
    except Exception as exc:
        log.exception("Unexpected failure processing queue message %s", message_id)
        return _transient(msg, ProductUpgradeError(f"unexpected {type(exc).__name__}"), fields)
    return result_message("accepted", upgrade_id=created.upgrade_id, **fields)


def parse_message(raw: bytes) -> QueueRequest:
    """Decode a request message: plain JSON or base64 of JSON; raises :class:`ValidationError`."""
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"the message is larger than {MAX_BODY_BYTES // 1024} KiB")
    data = _decode(raw)
    request = ProductUpgradeRequest.from_json(data)
    assert isinstance(data, dict)
    check = data.get("checkEligibility", False)
    if check is not None and not isinstance(check, bool):
        raise ValidationError("checkEligibility must be true or false")
    return QueueRequest(
        request=request,
        request_id=optional_str(data, "requestId"),
        correlation_id=optional_str(data, "correlationId"),
        check_eligibility=bool(check),
    )


def result_message(
    status: ResultStatus,
    *,
    message_id: str,
    upgrade_id: str | None = None,
    customer_id: str | None = None,
    product_family: str | None = None,
    correlation_id: str | None = None,
    request_id: str | None = None,
    error: ProductUpgradeError | None = None,
    retryable: bool = False,
) -> str:
    """The result message: every key always present, ``null`` where it does not apply."""
    return json.dumps(
        {
            "status": status,
            "upgradeId": upgrade_id,
            "customerId": customer_id,
            "productFamily": product_family,
            "correlationId": correlation_id,
            "requestId": request_id,
            "messageId": message_id,
            "error": None
            if error is None
            else {
                "code": error.code,
                "message": error.message,
                "partnerCenterErrorCode": error.partner_center_error_code,
                "retryable": retryable,
            },
        }
    )


def _transient(msg: func.QueueMessage, exc: ProductUpgradeError, fields: dict[str, Any]) -> str:
    attempt = _dequeue_count(msg)
    max_attempts = _max_attempts()
    if attempt < max_attempts:
        log.warning(
            "Queue message %s attempt %d of %d failed, the host will retry it: %s",
            fields["message_id"],
            attempt,
            max_attempts,
            exc.message,
        )
        raise exc
    log.error("Queue message %s failed on its last attempt (%d): %s", fields["message_id"], attempt, exc.message)
    return result_message("failed", error=exc, retryable=True, **fields)


def _dequeue_count(msg: func.QueueMessage) -> int:
    count = getattr(msg, "dequeue_count", None)
    return count if isinstance(count, int) and count > 0 else 1


def _max_attempts() -> int:
    try:
        return get_settings().max_attempts
    except SettingError:
        # Settings are broken (the failure being reported); count attempts against the setting alone, else
        # host.json's maxDequeueCount, so the last attempt still writes a result.
        try:
            return max(1, int(os.environ.get(MAX_ATTEMPTS_SETTING) or DEFAULTS[MAX_ATTEMPTS_SETTING]))
        except ValueError:
            return int(DEFAULTS[MAX_ATTEMPTS_SETTING])


def _decode(raw: bytes) -> object:
    text = _utf8(raw)
    if text is None or not text.strip():
        raise ValidationError("the message is empty or not UTF-8 text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    # The host's default messageEncoding is base64: producers written for it still work.
    try:
        decoded = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("the message is neither JSON nor base64 of JSON") from None
    inner = _utf8(decoded)
    try:
        return json.loads(inner) if inner is not None else None
    except (ValueError, RecursionError):
        raise ValidationError("the message is neither JSON nor base64 of JSON") from None


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _echo_fields(raw: bytes) -> dict[str, Any]:
    """What a rejected message's result can still echo: requestId and correlationId when readable."""
    try:
        data = _decode(raw)
    except ValidationError:
        return {}
    if not isinstance(data, dict):
        return {}
    echo: dict[str, Any] = {}
    for key, field_name in (("requestId", "request_id"), ("correlationId", "correlation_id")):
        value = data.get(key)
        if isinstance(value, str) and len(value) <= 256:
            echo[field_name] = value
    customer = data.get("customerId")
    if isinstance(customer, str) and len(customer) <= 64:
        echo["customer_id"] = customer
    return echo
