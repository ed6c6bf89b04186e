"""Signals: one structured log record per event an operator counts, alerts on or charts.

Each record carries its dimensions twice, so the alert rules and the campaign workbook in ``infra/`` find them
whichever way the logs reach Application Insights:

- in its message, as one JSON object at the end: ``upgradeEnded {"signal": "upgradeEnded", "upgradeId": ...}``.
  The Functions host's default logging sends a Python record's message, level and logger only (``traces``), never
  its attributes: the queries parse this JSON;
- as record attributes: an OpenTelemetry log exporter (host.json ``telemetryMode``) turns them into
  ``customDimensions``, which the queries read when they hold ``signal``.

The names are the ones below (a test holds the queries to them); the operation's ids (``correlationId``,
``requestId``, ``messageId``) are dimensions too, inside the JSON, where the other log lines append them.

Nothing secret goes into a dimension: values are ids, states, codes, counts and dates; every text value passes
:func:`shared.logs.redact` and is bounded all the same, as a second line of defence, and the whole message is one
the log-wide redaction leaves as it is, so the JSON always parses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from shared.logs import MAX_FIELD_LENGTH, REDACTED, current_ids, redact

log = logging.getLogger(__name__)

# -- the dimensions (customDimensions names) -------------------------------------------------------------------
SIGNAL = "signal"
UPGRADE_ID = "upgradeId"
CUSTOMER_ID = "customerId"
CAMPAIGN = "campaign"
OUTCOME = "outcome"
PARTNER_CENTER_STATUS = "partnerCenterStatus"
#: Milliseconds one Partner Center call took (an attempt, from sending to its answer).
DURATION_MS = "durationMs"
#: Hours since the upgrade was accepted (to its end, for an ended one).
AGE_HOURS = "ageHours"
OPERATION = "operation"
HTTP_STATUS = "httpStatus"
RETRY_AFTER_SECONDS = "retryAfterSeconds"
DEFERRALS = "deferrals"
ERROR_CODE = "errorCode"
PARTNER_CENTER_ERROR_CODE = "partnerCenterErrorCode"
#: A short, secret-free reason: Partner Center's error description or ours.
REASON = "reason"
#: Whether the access token carries multi-factor authentication (its ``amr`` claim holds ``mfa``).
MFA = "mfa"
#: When the access token just issued expires, and when the refresh token lapses if left unused (ISO 8601 UTC).
TOKEN_EXPIRES_ON = "tokenExpiresOn"
REFRESH_TOKEN_LAPSES_ON = "refreshTokenLapsesOn"
LAST_REFRESHED_ON = "lastRefreshedOn"
SECRET_NAME = "secretName"
SECRET_EXPIRES_ON = "secretExpiresOn"
DAYS_LEFT = "daysLeft"
#: The operation's ids (shared.logs.operation), as every log line of the operation carries them.
CORRELATION_ID = "correlationId"
REQUEST_ID = "requestId"
MESSAGE_ID = "messageId"

#: Every dimension a signal may carry: the workbook's and the alert rules' queries may read these and no other.
DIMENSIONS: frozenset[str] = frozenset(
    {
        SIGNAL,
        UPGRADE_ID,
        CUSTOMER_ID,
        CAMPAIGN,
        OUTCOME,
        PARTNER_CENTER_STATUS,
        DURATION_MS,
        AGE_HOURS,
        OPERATION,
        HTTP_STATUS,
        RETRY_AFTER_SECONDS,
        DEFERRALS,
        ERROR_CODE,
        PARTNER_CENTER_ERROR_CODE,
        REASON,
        MFA,
        TOKEN_EXPIRES_ON,
        REFRESH_TOKEN_LAPSES_ON,
        LAST_REFRESHED_ON,
        SECRET_NAME,
        SECRET_EXPIRES_ON,
        DAYS_LEFT,
        CORRELATION_ID,
        REQUEST_ID,
        MESSAGE_ID,
    }
)

# -- the signals (values of the ``signal`` dimension) ----------------------------------------------------------
UPGRADE_ACCEPTED = "upgradeAccepted"
UPGRADE_CHECKED = "upgradeChecked"
UPGRADE_ENDED = "upgradeEnded"
UPGRADE_DEFERRED = "upgradeDeferred"
STATUS_CHECK_FAILED = "statusCheckFailed"
PARTNER_CENTER_CALL = "partnerCenterCall"
PARTNER_CENTER_THROTTLED = "partnerCenterThrottled"
TOKEN_REFRESH = "tokenRefresh"
TOKEN_KEEPALIVE = "tokenKeepAlive"
SECRET_EXPIRY = "secretExpiry"

SIGNALS: frozenset[str] = frozenset(
    {
        UPGRADE_ACCEPTED,
        UPGRADE_CHECKED,
        UPGRADE_ENDED,
        UPGRADE_DEFERRED,
        STATUS_CHECK_FAILED,
        PARTNER_CENTER_CALL,
        PARTNER_CENTER_THROTTLED,
        TOKEN_REFRESH,
        TOKEN_KEEPALIVE,
        SECRET_EXPIRY,
    }
)


class Upgrade(Protocol):
    """What a signal reads of an upgrade (the ledger's record, or a created upgrade): attributes only."""

    @property
    def upgrade_id(self) -> str: ...

    @property
    def customer_id(self) -> str: ...


def emit(signal: str, dimensions: Mapping[str, object], *, level: int = logging.INFO) -> None:
    """Log one signal record: ``signal`` and its ``dimensions`` (names from :data:`DIMENSIONS`; None leaves one
    out). Raises ValueError for a name outside the catalogue, so a query can never wait for a dimension that
    no code writes."""
    unknown = set(dimensions) - DIMENSIONS
    if signal not in SIGNALS or unknown:
        raise ValueError(f"unknown signal {signal!r} or dimensions {sorted(unknown)}")
    if not log.isEnabledFor(level):
        return
    values: dict[str, object] = {SIGNAL: signal}
    values.update((name, _value(value)) for name, value in dimensions.items() if value is not None)
    # The operation's ids go inside the JSON: appended after it, as on other lines, the JSON would not end the line.
    ids = {name: _id(value) for name, value in current_ids().items() if name in DIMENSIONS - values.keys()}
    values.update((name, _value(value)) for name, value in ids.items())
    message, values = _message(signal, values)
    # Not ``extra=``: the record factory (shared.logs) already set the operation's ids (an upgradeId among them) as
    # attributes, which ``extra`` refuses to overwrite with a KeyError. The signal's own values win.
    path, line, function, _ = log.findCaller(stacklevel=3)
    record = log.makeRecord(log.name, level, path, line, signal, (), None, function)
    # The factory appended the ids and redacted; the message replaces that: it holds the ids, and redaction leaves
    # it as it is (checked in _message).
    record.msg, record.args = message, None
    record.__dict__.update(values)
    log.handle(record)


def _message(signal: str, values: dict[str, object]) -> tuple[str, dict[str, object]]:
    """``<signal> <JSON of values>``, and the values it holds: a line :func:`shared.logs.redact` leaves unchanged.

    Each text value was redacted on its own; in the JSON its quotes and backslashes are escaped, and a pattern
    could then match across an escape or a closing quote (``'code':"``), rewriting part of the JSON into something
    no query can parse. Such a value (rare: it looked like a secret once escaped) becomes ``[REDACTED]``; should the
    line still change, every text value does."""
    message = f"{signal} {_json(values)}"
    if redact(message) == message:
        return message, values
    values = {
        name: REDACTED if isinstance(value, str) and redact(_json(value)) != _json(value) else value
        for name, value in values.items()
    }
    message = f"{signal} {_json(values)}"
    if redact(message) != message:
        values = {
            name: value if name == SIGNAL or not isinstance(value, str) else REDACTED for name, value in values.items()
        }
        message = f"{signal} {_json(values)}"
    return message, values


def _id(value: str) -> str:
    # shared.logs quotes an id that is not plainly safe for its own ``key=value`` lines; the JSON escapes it anyway.
    if value.startswith('"'):
        with contextlib.suppress(ValueError):
            return str(json.loads(value))
    return value


def _json(value: object) -> str:
    # ensure_ascii=False: "\u00e9" and the like would be escapes a redaction pattern could cut in two.
    return json.dumps(value, ensure_ascii=False)


def upgrade_accepted(created: Upgrade, request: object = None) -> None:
    """An upgrade Partner Center accepted (a replay of a recorded request is no new acceptance)."""
    emit(UPGRADE_ACCEPTED, {**_upgrade(created, request), OUTCOME: "accepted"})


def upgrade_checked(record: Upgrade, partner_center_status: str | None) -> None:
    """A status check found the upgrade still running: its age tells how long it has been running."""
    emit(
        UPGRADE_CHECKED,
        {**_upgrade(record), OUTCOME: "running", PARTNER_CENTER_STATUS: partner_center_status, AGE_HOURS: _age(record)},
    )


def upgrade_ended(record: Upgrade) -> None:
    """The upgrade ended (``completed``, ``partial``, ``failed``, ``expired``), with Partner Center's reason."""
    details = getattr(record, "error_details", None)
    code = reason = None
    if isinstance(details, Mapping):
        code = details.get("code")
        reason = details.get("description") or details.get("message")
    outcome = getattr(record, "state", None)
    emit(
        UPGRADE_ENDED,
        {
            **_upgrade(record),
            OUTCOME: outcome,
            PARTNER_CENTER_STATUS: getattr(record, "partner_center_status", None),
            AGE_HOURS: _age(record, getattr(record, "ended_at", None)),
            ERROR_CODE: code,
            REASON: reason,
        },
        level=logging.INFO if outcome == "completed" else logging.WARNING,
    )


def status_check_failed(record: Upgrade, error: object) -> None:
    """A status check that could not learn the upgrade's state (throttled, an outage, our token refused)."""
    emit(
        STATUS_CHECK_FAILED,
        {**_upgrade(record), AGE_HOURS: _age(record), **_error(error)},
        level=logging.WARNING,
    )


def upgrade_deferred(request: object, error: object, *, deferrals: int, delay_seconds: float) -> None:
    """A queue request Partner Center said "not now" to, put back on the queue for later."""
    emit(
        UPGRADE_DEFERRED,
        {
            CUSTOMER_ID: getattr(request, "customer_id", None),
            CAMPAIGN: getattr(request, "campaign", None),
            OUTCOME: "deferred",
            DEFERRALS: deferrals,
            RETRY_AFTER_SECONDS: round(delay_seconds),
            **_error(error),
        },
    )


def partner_center_call(operation: str, http_status: int, seconds: float, retry_after: str | None = None) -> None:
    """One attempt of a Partner Center call and its answer; a 429 is the ``partnerCenterThrottled`` signal."""
    dimensions: dict[str, object] = {
        OPERATION: operation,
        HTTP_STATUS: http_status,
        DURATION_MS: round(seconds * 1000),
    }
    if http_status == 429:
        emit(PARTNER_CENTER_THROTTLED, {**dimensions, RETRY_AFTER_SECONDS: retry_after}, level=logging.WARNING)
    else:
        emit(PARTNER_CENTER_CALL, dimensions)


def _upgrade(upgrade: object, request: object = None) -> dict[str, object]:
    # The campaign is recorded on the upgrade (or its request) where the ledger knows campaigns; None elsewhere.
    campaign = getattr(upgrade, "campaign", None) or getattr(request, "campaign", None)
    return {
        UPGRADE_ID: getattr(upgrade, "upgrade_id", None),
        CUSTOMER_ID: getattr(upgrade, "customer_id", None),
        CAMPAIGN: campaign,
    }


def _error(error: object) -> dict[str, object]:
    # Partner Center's own status when it answered (PartnerCenterError.status); none for our own failures.
    status = getattr(error, "status", None)
    return {
        ERROR_CODE: getattr(error, "code", None),
        PARTNER_CENTER_ERROR_CODE: getattr(error, "partner_center_error_code", None),
        HTTP_STATUS: status if isinstance(status, int) else None,
        REASON: getattr(error, "message", None),
    }


def _age(record: object, until: datetime | None = None) -> float | None:
    accepted = getattr(record, "accepted_at", None)
    if not isinstance(accepted, datetime):
        return None
    return round(((until or datetime.now(UTC)) - accepted).total_seconds() / 3600, 2)


def _value(value: Any) -> object:
    """A dimension's value: numbers stay numbers, booleans become ``true``/``false``, text is redacted and bounded
    (whitespace runs become one space, control characters are dropped)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN nor Infinity
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    text = " ".join(str(value).split())
    if not text.isprintable():  # rare: a character at a time only then
        text = "".join(character for character in text if character.isprintable())
    text = redact(text)
    return text if len(text) <= MAX_FIELD_LENGTH else text[: MAX_FIELD_LENGTH - 3] + "..."
