"""The queue function, called as the host calls it, against the loopback Entra ID and Partner Center."""

import base64
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import CUSTOMER_ID
from shared.errors import PartnerCenterError, TokenError, UpstreamUnavailableError, ValidationError
from shared.functions.queue_worker import parse_message
from shared.upgrades.workflow import request_id_for

RESULT_KEYS = {"status", "upgradeId", "customerId", "productFamily", "correlationId", "requestId", "messageId", "error"}


def result_of(text):
    result = json.loads(text)
    assert set(result) == RESULT_KEYS
    if result["error"] is not None:
        assert set(result["error"]) == {"code", "message", "partnerCenterErrorCode", "retryable"}
    return result


def test_accepted_plain_json(app_env):
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, message_id="m-1"))
    [created] = app_env.partner_center.created_upgrades
    assert result["status"] == "accepted"
    assert result["upgradeId"] == created["upgrade_id"]
    assert (result["customerId"], result["productFamily"], result["messageId"]) == (CUSTOMER_ID, "Azure", "m-1")
    assert result["requestId"] is None and result["error"] is None
    assert result["correlationId"]
    assert created["request_id"] == request_id_for("queue-message", "m-1")


def test_accepted_base64_json_echoes_ids(app_env):
    body = json.dumps(
        {"customerId": CUSTOMER_ID, "productFamily": "Azure", "correlationId": "corr-9", "requestId": "crm-1"}
    )
    result = result_of(app_env.queue(base64.b64encode(body.encode())))
    assert result["status"] == "accepted"
    assert (result["correlationId"], result["requestId"]) == ("corr-9", "crm-1")
    [created] = app_env.partner_center.created_upgrades
    assert created["request_id"] == request_id_for("queue-request", "crm-1")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"customerId": "acme"}',
        base64.b64encode(b'{"customerId": "acme"}'),
        base64.b64encode(b"\xff\x00"),
        json.dumps({"customerId": CUSTOMER_ID, "requestId": 7}).encode(),
        json.dumps({"customerId": CUSTOMER_ID, "checkEligibility": "yes"}).encode(),
        json.dumps({"customerId": CUSTOMER_ID, "x": "y" * 70000}).encode(),
    ],
)
def test_invalid_messages_are_rejected_without_any_call(app_env, body):
    result = result_of(app_env.queue(body, message_id="bad-1"))
    assert result["status"] == "rejected"
    assert result["messageId"] == "bad-1"
    assert result["error"]["code"] == "invalid_request" and result["error"]["retryable"] is False
    assert app_env.partner_center.requests == [] and app_env.entra.requests == []


def test_rejected_echoes_what_it_can(app_env):
    result = result_of(app_env.queue({"customerId": "acme", "requestId": "r-1", "correlationId": "c-1"}))
    assert (result["customerId"], result["requestId"], result["correlationId"]) == ("acme", "r-1", "c-1")


@pytest.mark.parametrize(("status", "code"), [(400, 900118), (404, 900106), (409, 900112), (403, 900108), (403, 13605)])
def test_partner_center_refusals_are_rejected(app_env, status, code):
    app_env.partner_center.set_customer_error(CUSTOMER_ID, status, code, "No.")
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}))
    assert result["status"] == "rejected"
    assert result["error"]["partnerCenterErrorCode"] == str(code)
    assert result["error"]["retryable"] is False
    assert "No." in result["error"]["message"]


def test_already_upgraded_is_rejected_with_its_own_code(app_env):
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 400, 900110, "The upgrade is already completed.")
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "already_upgraded" and result["error"]["retryable"] is False


def test_throttling_without_storage_to_defer_to_raises_until_the_last_attempt(app_env):
    app_env.partner_center.throttle_next(100, retry_after="0")
    for attempt in (1, 2, 3, 4):
        with pytest.raises(PartnerCenterError) as info:
            app_env.queue({"customerId": CUSTOMER_ID, "requestId": "r-7"}, dequeue_count=attempt)
        assert info.value.status == 429
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID, "requestId": "r-7"}, dequeue_count=5))
    assert result["status"] == "failed"
    assert result["error"]["retryable"] is True and result["error"]["code"] == "throttled"
    sent = {r.header("MS-RequestId") for r in app_env.partner_center.requests_to("/v1/productupgrades")}
    assert sent == {request_id_for("queue-request", "r-7")}


def could_not_defer(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("Could not defer message")]


def test_try_again_later_without_storage_to_defer_to_ends_rejected_but_retryable(app_env, caplog):
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 403, 900130, "Try again later.")
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=1))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "try_again_later" and result["error"]["retryable"] is True
    assert result["error"]["partnerCenterErrorCode"] == "900130"
    assert could_not_defer(caplog)


def test_a_long_retry_after_without_storage_to_defer_to_goes_back_to_the_host(app_env, caplog):
    app_env.partner_center.throttle_next(100, retry_after="600")
    with pytest.raises(PartnerCenterError) as info:
        app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=1)
    assert (info.value.status, info.value.retry_after) == (429, 600)
    assert could_not_defer(caplog)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=5))
    assert result["status"] == "failed"
    assert result["error"]["code"] == "throttled" and result["error"]["retryable"] is True


def test_connection_failures_raise_then_fail(app_env):
    app_env.partner_center.reset_next(100, match="/v1/productupgrades")
    with pytest.raises(UpstreamUnavailableError):
        app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=1)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=5))
    assert result["status"] == "failed" and result["error"]["code"] == "upstream_unavailable"


def test_configuration_failure_is_retried_then_failed(monkeypatch, app_env):
    app_env.entra.expire_refresh_tokens()
    with pytest.raises(TokenError):
        app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=1)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=5))
    assert result["status"] == "failed" and result["error"]["code"] == "token_error"


def test_missing_settings_fail_on_the_last_attempt_naming_the_setting(monkeypatch, app_env):
    from shared.upgrades import runtime

    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    monkeypatch.setenv("PRODUCT_UPGRADE_MAX_ATTEMPTS", "2")
    runtime.install(None)
    with pytest.raises(Exception, match="PARTNER_CENTER_TENANT_ID"):
        app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=1)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=2))
    assert result["status"] == "failed"
    assert result["error"]["code"] == "configuration_error"
    assert "PARTNER_CENTER_TENANT_ID" in result["error"]["message"]


def test_check_eligibility_first_rejects_an_ineligible_customer(app_env):
    app_env.partner_center.set_ineligible(CUSTOMER_ID, "No legacy Azure offer to upgrade.")
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID, "checkEligibility": True}))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "not_eligible"
    assert "No legacy Azure offer to upgrade." in result["error"]["message"]
    assert app_env.partner_center.create_posts == 0


def test_check_eligibility_first_creates_for_an_eligible_customer(app_env):
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID, "checkEligibility": True}))
    assert result["status"] == "accepted"
    assert app_env.partner_center.create_posts == 1
    assert len(app_env.partner_center.requests_to("eligibility")) == 1


def test_upgrade_already_in_progress_reports_the_running_one(app_env):
    running = app_env.partner_center.add_upgrade(CUSTOMER_ID)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}))
    assert result["status"] == "accepted"
    assert result["upgradeId"] == running
    assert app_env.partner_center.created_upgrades == []


# -- property-based: any bytes at all end in a result, never an unhandled exception ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
messages = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"customerId": st.one_of(st.text(max_size=40), st.integers(), st.none())},
        optional={
            "productFamily": json_values,
            "requestId": json_values,
            "correlationId": json_values,
            "checkEligibility": json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
)


@given(raw=messages, as_base64=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_message_parses_or_is_a_validation_error(raw, as_base64):
    body = base64.b64encode(raw) if as_base64 else raw
    try:
        parsed = parse_message(body)
    except ValidationError as exc:
        assert exc.http_status == 400 and exc.message
    else:
        assert str(uuid.UUID(parsed.request.customer_id)) == parsed.request.customer_id


@given(raw=messages)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_invalid_message_gets_a_rejected_result_through_the_function(app_env, raw):
    try:
        parse_message(raw)
    except ValidationError:
        result = result_of(app_env.queue(raw, message_id="fuzz"))
        assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"
        assert app_env.partner_center.create_posts == 0


# -- the caller's ids and the attempts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        {"correlationId": "c-1\nERROR forged line"},
        {"requestId": "r-1\r\n[correlationId=forged]"},
        {"requestId": "r\x1b[31m"},
        {"correlationId": "c\u2028line"},
        {"requestId": "r" * 257},
    ],
)
def test_queue_ids_must_be_printable_and_bounded(app_env, ids):
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID, **ids}, message_id="m-forge"))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "invalid_request" and result["error"]["retryable"] is False
    assert "at most 256 characters" in result["error"]["message"]
    assert app_env.partner_center.requests == []


def test_printable_queue_ids_are_quoted_in_log_lines_and_whole_in_signals(app_env, caplog):
    body = {"customerId": CUSTOMER_ID, "correlationId": "c-1] [requestId=forged"}
    assert result_of(app_env.queue(body))["status"] == "accepted"
    records = [r for r in caplog.records if r.name.startswith("shared.")]
    # A signal carries the ids inside the JSON that ends its message: there the id is one JSON string.
    signal_lines = [r.getMessage() for r in records if hasattr(r, "signal")]
    lines = [r.getMessage() for r in records if not hasattr(r, "signal")]
    assert lines and all('correlationId="c-1] [requestId=forged"' in line for line in lines if "correlationId" in line)
    assert not any("correlationId=c-1]" in line for line in lines + signal_lines)
    assert signal_lines
    for line in signal_lines:
        assert json.loads(line.partition(" ")[2])["correlationId"] == "c-1] [requestId=forged"


def test_max_attempts_above_max_dequeue_count_still_ends_in_a_result(monkeypatch, app_env):
    from shared.upgrades import runtime

    monkeypatch.setenv("PRODUCT_UPGRADE_MAX_ATTEMPTS", "10")  # above host.json's maxDequeueCount of 5
    runtime.install(None)
    with pytest.raises(Exception, match="PRODUCT_UPGRADE_MAX_ATTEMPTS"):
        app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=4)
    result = result_of(app_env.queue({"customerId": CUSTOMER_ID}, dequeue_count=5))  # host.json's last attempt
    assert result["status"] == "failed" and result["error"]["code"] == "configuration_error"
    assert "PRODUCT_UPGRADE_MAX_ATTEMPTS" in result["error"]["message"]
    assert app_env.partner_center.requests == []


@pytest.mark.parametrize(
    "original",
    [
        "m-1\nERROR forged line",
        "x",
        "00000000-0000-0000-0000-00000000000g",
        "{00000000-0000-0000-0000-000000000001}",
        7,
    ],
)
def test_original_message_id_takes_only_a_queue_message_id(app_env, caplog, original):
    body = {"customerId": CUSTOMER_ID, "originalMessageId": original, "deferrals": 1}
    result = result_of(app_env.queue(body, message_id="m-own"))
    assert result["status"] == "rejected" and result["messageId"] == "m-own"
    assert result["error"]["code"] == "invalid_request" and "originalMessageId" in result["error"]["message"]
    assert app_env.partner_center.requests == []
    assert not any("forged" in record.getMessage() for record in caplog.records)


def test_a_deferred_request_answers_for_the_message_it_first_came_in(app_env):
    first = str(uuid.uuid4())  # Azure's message ids are GUIDs, and only this app writes originalMessageId
    body = {"customerId": CUSTOMER_ID, "originalMessageId": first, "deferrals": 1}
    result = result_of(app_env.queue(body, message_id=str(uuid.uuid4())))
    assert result["status"] == "accepted" and result["messageId"] == first
