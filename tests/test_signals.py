"""Signals: one structured record per upgrade event, with the dimensions the alerts and the workbook query.

The helper is checked on its own; the events themselves through the app (Azurite, the loopback Partner Center),
where they happen: accepted, checked, ended, a failed check, a deferral, a Partner Center call and a 429.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox import CUSTOMER_ID
from shared import logs, signals
from shared.partner_center.client import operation_of
from tests.harness import Host


def signal_records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, signals.SIGNAL, None) == name]


def dimensions(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in signals.DIMENSIONS if hasattr(record, name)}


def message_dimensions(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON object that ends the record's message (what the queries parse with the host's default logging)."""
    message = record.getMessage()
    signal, _, payload = message.partition(" ")
    parsed = json.loads(payload)
    assert isinstance(parsed, dict) and signal == parsed["signal"]
    return parsed


def test_a_signal_carries_its_dimensions_as_record_attributes_and_in_its_message(caplog):
    signals.emit(signals.UPGRADE_ACCEPTED, {signals.UPGRADE_ID: "u-1", signals.CAMPAIGN: None, signals.AGE_HOURS: 1.5})
    [record] = signal_records(caplog, signals.UPGRADE_ACCEPTED)
    assert dimensions(record) == {"signal": "upgradeAccepted", "upgradeId": "u-1", "ageHours": 1.5}
    assert record.getMessage() == 'upgradeAccepted {"signal": "upgradeAccepted", "upgradeId": "u-1", "ageHours": 1.5}'
    assert record.levelno == logging.INFO and record.name == "shared.signals"


def test_a_text_with_spaces_and_quotes_stays_one_value_of_the_message_json(caplog):
    reason = 'Customer "Contoso, Ltd" has a \\ and {braces}: not eligible'
    signals.emit(signals.UPGRADE_ENDED, {signals.UPGRADE_ID: "u-1", signals.OUTCOME: "failed", signals.REASON: reason})
    [record] = signal_records(caplog, signals.UPGRADE_ENDED)
    assert message_dimensions(record) == dimensions(record)
    assert message_dimensions(record)["reason"] == reason
    assert list(message_dimensions(record)) == ["signal", "upgradeId", "outcome", "reason"]


def test_the_operation_ids_are_inside_the_json_which_ends_the_message(caplog):
    # Other lines get " [correlationId=... messageId=...]" appended; a signal's JSON must stay the end of its line.
    logs.install()
    with logs.operation(correlationId="c-1", messageId='m "2"'):
        signals.emit(signals.UPGRADE_DEFERRED, {signals.CUSTOMER_ID: "cust-1", signals.DEFERRALS: 2})
    [record] = signal_records(caplog, signals.UPGRADE_DEFERRED)
    assert record.getMessage().endswith("}")
    assert message_dimensions(record) == {
        "signal": "upgradeDeferred",
        "customerId": "cust-1",
        "deferrals": 2,
        "correlationId": "c-1",
        "messageId": 'm "2"',
    }
    assert message_dimensions(record) == dimensions(record)


@pytest.mark.parametrize(
    "reason",
    [
        "refused 'code':",  # a dict-repr pattern that, escaped, would run into the JSON's closing quote
        'code=ab"c',  # a form-field pattern that, escaped, would take the backslash of \" and leave a bare quote
    ],
)
def test_a_value_the_log_redaction_would_cut_is_redacted_whole_and_the_json_still_parses(caplog, reason):
    logs.install()
    signals.emit(
        signals.STATUS_CHECK_FAILED, {signals.UPGRADE_ID: "u-9", signals.REASON: reason, signals.ERROR_CODE: "X"}
    )
    [record] = signal_records(caplog, signals.STATUS_CHECK_FAILED)
    parsed = message_dimensions(record)
    assert parsed == dimensions(record)
    assert (parsed["upgradeId"], parsed["errorCode"]) == ("u-9", "X")
    assert logs.redact(record.getMessage()) == record.getMessage()


def test_control_characters_are_dropped_from_text_values(caplog):
    # JSON would escape them as \\u001b..., an escape a redaction pattern could cut in two; a terminal would obey them.
    signals.emit(signals.UPGRADE_ENDED, {signals.REASON: "bell\x07 and \x1b[31mred\x00"})
    [record] = signal_records(caplog, signals.UPGRADE_ENDED)
    assert record.reason == "bell and [31mred"
    assert "\\u" not in record.getMessage()


def test_values_json_cannot_hold_are_rendered_as_text(caplog):
    signals.emit(signals.UPGRADE_CHECKED, {signals.AGE_HOURS: float("nan"), signals.DURATION_MS: float("inf")})
    [record] = signal_records(caplog, signals.UPGRADE_CHECKED)
    assert message_dimensions(record) == {"signal": "upgradeChecked", "ageHours": "nan", "durationMs": "inf"}


def test_a_signal_inside_an_operation_that_bound_the_same_id_is_logged(caplog):
    # The log factory sets the operation's ids (upgradeId among them) on every record: logging's own ``extra``
    # refuses to overwrite them with a KeyError, which would have failed the status check that logged.
    logs.install()
    with logs.operation(upgradeId="u-ctx", messageId="m-1"):
        signals.emit(signals.UPGRADE_CHECKED, {signals.UPGRADE_ID: "u-ctx", signals.OUTCOME: "running"})
    [record] = signal_records(caplog, signals.UPGRADE_CHECKED)
    assert (record.upgradeId, record.messageId, record.outcome) == ("u-ctx", "m-1", "running")


@pytest.mark.parametrize(
    ("signal", "dims"),
    [("upgradeVanished", {}), (signals.UPGRADE_ENDED, {"upgradeID": "typo"}), (signals.UPGRADE_ENDED, {"token": "x"})],
)
def test_a_signal_or_dimension_outside_the_catalogue_is_refused(signal, dims):
    with pytest.raises(ValueError, match="unknown signal"):
        signals.emit(signal, dims)


def test_values_are_rendered_for_queries(caplog):
    moment = datetime(2027, 4, 1, 12, 30, tzinfo=UTC)
    signals.emit(
        signals.TOKEN_KEEPALIVE,
        {signals.MFA: False, signals.TOKEN_EXPIRES_ON: moment, signals.REASON: "two\nlines", signals.DAYS_LEFT: 3},
    )
    [record] = signal_records(caplog, signals.TOKEN_KEEPALIVE)
    assert (record.mfa, record.tokenExpiresOn, record.reason, record.daysLeft) == (
        "false",
        "2027-04-01T12:30:00Z",
        "two lines",
        3,
    )
    signals.emit(signals.TOKEN_KEEPALIVE, {signals.REASON: "word " * 1000})
    assert len(signal_records(caplog, signals.TOKEN_KEEPALIVE)[-1].reason) == 256


def test_an_ended_upgrade_carries_its_outcome_reason_and_age(caplog):
    accepted = datetime.now(UTC) - timedelta(hours=30)
    record = SimpleNamespace(
        upgrade_id="u-2",
        customer_id=CUSTOMER_ID,
        campaign="spring-2027",
        state="failed",
        partner_center_status="Failed",
        accepted_at=accepted,
        ended_at=accepted + timedelta(hours=6),
        error_details={"code": "X1", "description": "Subscription is disabled"},
    )
    signals.upgrade_ended(record)
    [signal] = signal_records(caplog, signals.UPGRADE_ENDED)
    assert dimensions(signal) == {
        "signal": "upgradeEnded",
        "upgradeId": "u-2",
        "customerId": CUSTOMER_ID,
        "campaign": "spring-2027",
        "outcome": "failed",
        "partnerCenterStatus": "Failed",
        "ageHours": 6.0,
        "errorCode": "X1",
        "reason": "Subscription is disabled",
    }
    assert signal.levelno == logging.WARNING


def test_campaign_is_null_until_the_record_knows_campaigns(caplog):
    signals.upgrade_accepted(SimpleNamespace(upgrade_id="u-3", customer_id=CUSTOMER_ID))
    [signal] = signal_records(caplog, signals.UPGRADE_ACCEPTED)
    assert not hasattr(signal, "campaign")  # a null dimension is left out, as customDimensions leaves it out


@pytest.mark.parametrize(
    ("url", "operation"),
    [
        ("https://pc/v1/productupgrades", "create"),
        ("https://pc/v1/productUpgrades/eligibility", "eligibility"),
        ("https://pc/v1/productUpgrades/abc/status", "status"),
        ("https://pc/v1/customers?size=500", "customers"),
        ("https://pc/v1/customers/c-1/subscriptions", "subscriptions"),
        ("https://pc/v1/other", "other"),
    ],
)
def test_partner_center_operations_are_named_by_their_path(url, operation):
    assert operation_of(url) == operation


# -- where the events happen ------------------------------------------------------------------------------------


def test_an_upgrade_signals_accepted_checked_and_ended(stored_app, azurite, caplog):
    stored_app.partner_center.complete_after_polls(1)
    host = Host(azurite.connection_string)
    assert stored_app.create({"customerId": CUSTOMER_ID}).status_code == 202
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)

    [accepted] = signal_records(caplog, signals.UPGRADE_ACCEPTED)
    [checked] = signal_records(caplog, signals.UPGRADE_CHECKED)
    [ended] = signal_records(caplog, signals.UPGRADE_ENDED)
    upgrade_id = host.outcomes[0]["upgradeId"]
    assert (accepted.upgradeId, accepted.customerId, accepted.outcome) == (upgrade_id, CUSTOMER_ID, "accepted")
    assert (checked.upgradeId, checked.outcome, checked.partnerCenterStatus) == (upgrade_id, "running", "InProgress")
    assert 0 <= checked.ageHours < 1
    assert (ended.upgradeId, ended.outcome, ended.partnerCenterStatus) == (upgrade_id, "completed", "Completed")
    calls = signal_records(caplog, signals.PARTNER_CENTER_CALL)
    assert [call.operation for call in calls] == ["create", "status", "status"]
    assert all(call.httpStatus in (200, 202) and call.durationMs >= 0 for call in calls)


def test_a_throttled_call_and_a_failed_check_are_signalled(stored_app, azurite, caplog):
    host = Host(azurite.connection_string)
    assert stored_app.create({"customerId": CUSTOMER_ID}).status_code == 202
    stored_app.partner_center.throttle_next(5, retry_after="1", match="/status")
    host.run_until(lambda: bool(signal_records(caplog, signals.STATUS_CHECK_FAILED)), timeout=30)

    throttled = signal_records(caplog, signals.PARTNER_CENTER_THROTTLED)
    assert throttled
    assert all((t.operation, t.httpStatus, t.retryAfterSeconds) == ("status", 429, "1") for t in throttled)
    [failed, *_] = signal_records(caplog, signals.STATUS_CHECK_FAILED)
    assert (failed.customerId, failed.httpStatus, failed.errorCode) == (CUSTOMER_ID, 429, "throttled")
    assert failed.levelno == logging.WARNING


def test_a_deferred_request_is_signalled(stored_app, azurite, caplog):
    stored_app.partner_center.set_customer_error(
        CUSTOMER_ID, 403, 900130, "Subscriptions were purchased recently; please try again later."
    )
    host = Host(azurite.connection_string)
    host.send_request({"customerId": CUSTOMER_ID})
    host.run_until(lambda: bool(signal_records(caplog, signals.UPGRADE_DEFERRED)), timeout=30)
    [deferred] = signal_records(caplog, signals.UPGRADE_DEFERRED)
    assert (deferred.customerId, deferred.outcome, deferred.deferrals) == (CUSTOMER_ID, "deferred", 1)
    assert (deferred.partnerCenterErrorCode, deferred.httpStatus, deferred.retryAfterSeconds) == ("900130", 403, 3600)
