"""The queue adapter: one request message in, exactly one result message out (or a raise, for a retry).

Permanent problems (a bad message, a Partner Center refusal about the customer) give a ``rejected``
result at once. After a failed attempt, :func:`shared.upgrades.after_failure.after_failure` decides (the rule)
and this module carries it out: raise so the host retries the message, defer it (back on the requests queue,
visible after the wait, keeping its identity, no result written yet), or write the final ``failed`` or
``rejected`` result. A customer Partner Center holds for longer than :data:`HOLD_PATIENCE_SECONDS` is deferred,
so it costs its worker nothing while the rest of the campaign goes on.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import azure.functions as func

from shared import logs, signals
from shared.errors import PartnerCenterError, ProductUpgradeError, SettingError, ValidationError
from shared.functions.messages import decode_json_message
from shared.models import Campaign, ProductUpgradeRequest, optional_str, parse_caller_id
from shared.partner_center.pace import customer_hold_patience
from shared.retry import remaining_budget, time_budget
from shared.settings import get_settings, max_attempts_alone
from shared.upgrades.after_failure import Defer, DeferralLimits, Failure, Progress, Retry, after_failure
from shared.upgrades.campaigns import optional_campaign
from shared.upgrades.runtime import Runtime, get_runtime
from shared.upgrades.workflow import OperationIds, UpgradeOrder, request_id_for

log = logging.getLogger(__name__)

ResultStatus = Literal["accepted", "rejected", "failed"]

#: A queue message id as Azure Storage issues them (a GUID in its 8-4-4-4-12 form).
_MESSAGE_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")

#: One queue invocation gives up within this many seconds in all, well inside host.json's functionTimeout (5 min).
QUEUE_TIME_BUDGET_SECONDS = 120.0
#: A customer Partner Center holds (throttles on its own) for longer than this is deferred, not waited for.
HOLD_PATIENCE_SECONDS = 5.0


@dataclass(frozen=True)
class QueueRequest:
    request: ProductUpgradeRequest
    request_id: str | None
    correlation_id: str | None
    check_eligibility: bool = False
    #: Times this request was deferred already, and the id of the message it first came in.
    deferrals: int = 0
    original_message_id: str | None = None
    #: Business answers the request has had (a deferral for "try again later" is one): its next MS-RequestId.
    business_answers: int = 0
    campaign: Campaign | None = None

    def order(self, ids: OperationIds) -> UpgradeOrder:
        """This request as the workflow takes it, with the ids of this attempt."""
        return UpgradeOrder(
            self.request,
            ids,
            caller_request_id=self.request_id,
            campaign=self.campaign,
            check_eligibility=self.check_eligibility,
        )

    def deferred(self, message_id: str, business_answers: int = 0) -> dict[str, Any]:
        """The message that puts this request back on the queue once more, keeping its identity (and counting the
        business answers it has had, so the next attempt sends the next MS-RequestId)."""
        body: dict[str, Any] = {
            **self.request.to_json(),
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
            "checkEligibility": self.check_eligibility,
            "campaign": self.campaign.name if self.campaign else None,
            "deferrals": self.deferrals + 1,
            "originalMessageId": self.original_message_id or message_id,
            "businessAnswers": business_answers or None,
        }
        return {key: value for key, value in body.items() if value is not None}


def handle(msg: func.QueueMessage) -> str | None:
    """Process one request message: the JSON result message to write, None when the request was deferred,
    or raise to have the host retry."""
    with (
        logs.operation(messageId=msg.id or None),
        time_budget(QUEUE_TIME_BUDGET_SECONDS),
        customer_hold_patience(HOLD_PATIENCE_SECONDS),
    ):
        return _handle(msg)


def _handle(msg: func.QueueMessage) -> str | None:
    raw = msg.get_body() or b""
    try:
        parsed = parse_message(raw)
    except ValidationError as exc:
        log.info("Rejecting queue message %s: %s", msg.id, exc.message)
        return result_message("rejected", message_id=msg.id or "", error=exc, **_echo_fields(raw))

    # A deferred request answers for the message it first came in: same MS-RequestId, same messageId.
    message_id = parsed.original_message_id or msg.id or ""
    request = parsed.request
    ids = OperationIds.of_caller(
        request_id_for("queue-request", parsed.request_id)
        if parsed.request_id
        else request_id_for("queue-message", message_id),
        parsed.correlation_id or request_id_for("queue-correlation", message_id),
        parsed.business_answers,
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
        runtime = get_runtime()
        # The result is decided here (deferral, the host's retries): a failure is recorded once it is final.
        created = runtime.workflow.attempt(parsed.order(ids))
    except ProductUpgradeError as exc:
        return _failed(msg, parsed, ids, exc, fields)
    except Exception as exc:
        log.exception("Unexpected failure processing queue message %s", message_id)
        return _failed(msg, parsed, ids, ProductUpgradeError(f"unexpected {type(exc).__name__}"), fields)
    return result_message("accepted", upgrade_id=created.upgrade_id, **fields)


def _failed(
    msg: func.QueueMessage, parsed: QueueRequest, ids: OperationIds, exc: ProductUpgradeError, fields: dict[str, Any]
) -> str | None:
    """Carry out the decision :func:`after_failure` takes: raise, defer (None) or the final result message."""
    # The ids the failed attempt used (the ledger may have counted more business answers than the message).
    ids = ids.counting(exc.business_answers)
    message_id = fields["message_id"]
    progress = Progress(_dequeue_count(msg), _max_attempts(), parsed.deferrals, ids.business_answers)
    decision = after_failure(Failure.of(exc), progress, _deferral_limits(exc))
    if isinstance(decision, Defer):
        try:
            _defer(parsed, exc, message_id, decision)
            return None
        except ProductUpgradeError as defer_error:
            # No queue to defer to: the host's own retries (429) or a result now (900130) instead.
            log.warning("Could not defer message %s: %s", message_id, defer_error.message)
            decision = decision.otherwise
    if isinstance(decision, Retry):
        log.warning(
            "Queue message %s attempt %d of %d failed, the host will retry it: %s",
            message_id,
            progress.attempt,
            progress.max_attempts,
            exc.message,
        )
        raise exc
    if decision.reason == "deferrals_used_up":
        log.warning("Request of message %s deferred %d times already; giving up", message_id, parsed.deferrals)
    elif decision.reason == "refused":
        log.info("Rejecting queue message %s: %s", message_id, exc.message)
    else:
        log.error("Queue message %s failed on its last attempt (%d): %s", message_id, progress.attempt, exc.message)
    _record(parsed, ids, exc)
    return result_message(decision.status, error=exc, retryable=decision.retryable, **fields)


def _deferral_limits(exc: ProductUpgradeError) -> DeferralLimits | None:
    """How this invocation may defer. Only Partner Center's answers are deferred, and one means the runtime was
    built (the failure may be that it could not be)."""
    if not isinstance(exc, PartnerCenterError):
        return None
    runtime = get_runtime()
    return DeferralLimits(
        max_deferrals=runtime.settings.max_deferrals,
        defer_seconds=runtime.settings.defer_seconds,
        budget_left=remaining_budget(),
        total_budget=runtime.policy.total_budget,
        min_attempt_time=runtime.policy.min_attempt_time,
    )


def _defer(parsed: QueueRequest, exc: ProductUpgradeError, message_id: str, decision: Defer) -> None:
    """Put the request back on the queue for later. Raises :class:`ProductUpgradeError` when the queue cannot be
    written."""
    runtime: Runtime = get_runtime()
    delay = decision.delay_seconds
    runtime.scheduler.defer_request(parsed.deferred(message_id, decision.next_business_answers), delay)
    log.info(
        "Partner Center said not now (%s) for message %s; deferred %d of %d, back in %.0f s",
        exc.code,
        message_id,
        parsed.deferrals + 1,
        runtime.settings.max_deferrals,
        delay,
    )
    signals.upgrade_deferred(parsed.request, exc, deferrals=parsed.deferrals + 1, delay_seconds=delay)


def _record(parsed: QueueRequest, ids: OperationIds, exc: ProductUpgradeError) -> None:
    """Record a final failure in the ledger; settings that are themselves the failure leave it unrecorded."""
    try:
        runtime = get_runtime()
    except SettingError:
        return
    runtime.workflow.record_failure(parsed.order(ids), exc)


def parse_message(raw: bytes) -> QueueRequest:
    """Decode a request message: plain JSON or base64 of JSON; raises :class:`ValidationError`."""
    data = decode_json_message(raw)
    request = ProductUpgradeRequest.from_json(data)
    assert isinstance(data, dict)
    check = data.get("checkEligibility", False)
    if check is not None and not isinstance(check, bool):
        raise ValidationError("checkEligibility must be true or false")
    deferrals = _count(data, "deferrals")
    business_answers = _count(data, "businessAnswers")
    return QueueRequest(
        request=request,
        request_id=_caller_id(data, "requestId"),
        correlation_id=_caller_id(data, "correlationId"),
        check_eligibility=bool(check),
        deferrals=deferrals,
        original_message_id=_original_message_id(data),
        business_answers=business_answers,
        campaign=optional_campaign(data),
    )


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
        raise ValidationError(f"{key} must be a count")
    return value


def _original_message_id(data: dict[str, Any]) -> str | None:
    """Only this app writes ``originalMessageId`` (on a deferral): a queue message id, which Azure makes a GUID.
    Anything else would reach the result's ``messageId`` and the log as the producer wrote it."""
    value = optional_str(data, "originalMessageId")
    if value is not None and not _MESSAGE_ID.fullmatch(value):
        raise ValidationError("originalMessageId must be the id of a queue message (a GUID); only the app sets it")
    return value


def _caller_id(data: dict[str, Any], key: str) -> str | None:
    # The HTTP path's rule for the caller's ids: printable and bounded, so they cannot forge log fields.
    value = optional_str(data, key)
    return parse_caller_id(value, key) if value else None


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


def _dequeue_count(msg: func.QueueMessage) -> int:
    count = getattr(msg, "dequeue_count", None)
    return count if isinstance(count, int) and count > 0 else 1


def _max_attempts() -> int:
    try:
        return get_settings().max_attempts
    except SettingError:
        return max_attempts_alone()


def _echo_fields(raw: bytes) -> dict[str, Any]:
    """What a rejected message's result can still echo: requestId and correlationId when readable."""
    try:
        data = decode_json_message(raw)
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
