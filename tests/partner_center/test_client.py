"""Pure parsing of Partner Center responses; the client against the fake: test_http_api, test_queue_worker."""

import json

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PartnerCenterError
from shared.partner_center.client import error_from_response, parse_location


def response(status, body=b"", headers=None):
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers.update(headers or {})
    return resp


@pytest.mark.parametrize(
    "location",
    [
        "productUpgrades/42d075a4-bfe7-43e7-af6d-7c68a57edcb4",
        "/v1/productUpgrades/42d075a4-bfe7-43e7-af6d-7c68a57edcb4",
        "https://api.partnercenter.microsoft.com/v1/productupgrades/42d075a4-bfe7-43e7-af6d-7c68a57edcb4",
        "productUpgrades/42d075a4-bfe7-43e7-af6d-7c68a57edcb4/",
        " productupgrades/42d075a4-bfe7-43e7-af6d-7c68a57edcb4?x=1 ",
    ],
)
def test_location_in_every_form(location):
    assert parse_location(location) == "42d075a4-bfe7-43e7-af6d-7c68a57edcb4"


@pytest.mark.parametrize(
    "location", [None, "", "  ", "productUpgrades", "/v1/customers/x", "productUpgrades/eligibility"]
)
def test_location_without_an_id(location):
    assert parse_location(location) is None


def test_partner_center_error_body():
    error = error_from_response(
        response(
            403,
            {"code": 900108, "description": "No Azure subscriptions to upgrade.", "data": [], "source": "PC"},
            {"MS-CorrelationId": "c1", "MS-RequestId": "r1"},
        ),
    )
    assert (error.status, error.error_code, error.description) == (403, "900108", "No Azure subscriptions to upgrade.")
    assert (error.correlation_id, error.request_id) == ("c1", "r1")
    assert error.http_status == 422 and not error.transient and error.code == "not_eligible"


def test_string_code_and_throttle_body():
    assert error_from_response(response(409, {"code": "900109", "description": "d"})).error_code == "900109"
    throttled = error_from_response(
        response(429, {"statusCode": 429, "message": "Rate limit is exceeded."}, {"Retry-After": "2.2"})
    )
    assert throttled.error_code is None and throttled.description == "Rate limit is exceeded."
    assert throttled.retry_after == 3 and throttled.http_status == 503 and throttled.transient


@pytest.mark.parametrize(
    ("status", "code", "http_status", "transient"),
    [
        (400, "900118", 400, False),
        (404, "900106", 404, False),
        (409, "900109", 409, False),
        (403, "13605", 422, False),
        (403, "900123", 422, False),
        (403, None, 502, True),
        (401, None, 502, True),
        (401, "123", 502, True),
        (429, None, 503, True),
        (500, None, 502, True),
        (503, "x", 502, True),
        (422, None, 400, False),
        (408, None, 504, True),
    ],
)
def test_contract_error_table(status, code, http_status, transient):
    error = PartnerCenterError(status, code, "d")
    assert error.http_status == http_status
    assert error.transient is transient
    assert error.partner_center_error_code == code


@given(st.text(max_size=200))
def test_any_location_gives_an_id_segment_or_none(location):
    upgrade_id = parse_location(location)
    assert upgrade_id is None or (upgrade_id and "/" not in upgrade_id and "?" not in upgrade_id)


@given(
    st.uuids().map(str), st.sampled_from(["productUpgrades/", "/v1/productupgrades/", "https://h/v1/productUpgrades/"])
)
def test_any_upgrade_id_round_trips_through_location(upgrade_id, prefix):
    assert parse_location(prefix + upgrade_id) == upgrade_id


def test_point6_non_json_body_is_logged_not_described(caplog):
    error = error_from_response(response(502, b"<html>internal 10.1.2.3 " + b"x" * 5000), request_id="r-1")
    assert error.description == "" and "10.1.2.3" not in error.message
    assert error.http_status == 502 and error.transient
    [record] = [r for r in caplog.records if "not its JSON error" in r.getMessage()]
    assert record.levelname == "DEBUG" and "10.1.2.3" in record.getMessage() and "r-1" in record.getMessage()


@pytest.mark.parametrize("body", [{"code": "1", "description": {"nested": "x"}}, ["a"], "just a string"])
def test_point6_json_without_a_text_description_gives_none(body):
    assert error_from_response(response(400, body)).description == ""
