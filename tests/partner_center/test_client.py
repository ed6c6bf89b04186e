"""Pure parsing of Partner Center responses; the collection reads (customers, subscriptions) against the fake.
The product-upgrade calls against the fake: test_http_api, test_queue_worker."""

import json
import uuid

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PartnerCenterError, UpstreamUnavailableError
from shared.partner_center.client import PartnerCenterClient, error_from_response, next_page, parse_location
from shared.partner_center.pace import PaceLimiter
from shared.partner_center.pace_rules import PaceRules
from shared.retry import RetryPolicy
from shared.upgrades import runtime


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


def test_non_json_error_body_is_logged_at_debug_not_described(caplog):
    error = error_from_response(response(502, b"<html>internal 10.1.2.3 " + b"x" * 5000), request_id="r-1")
    assert error.description == "" and "10.1.2.3" not in error.message
    assert error.http_status == 502 and error.transient
    [record] = [r for r in caplog.records if "not its JSON error" in r.getMessage()]
    assert record.levelname == "DEBUG" and "10.1.2.3" in record.getMessage() and "r-1" in record.getMessage()


@pytest.mark.parametrize("body", [{"code": "1", "description": {"nested": "x"}}, ["a"], "just a string"])
def test_json_error_without_a_text_description_gives_an_empty_one(body):
    assert error_from_response(response(400, body)).description == ""


# -- collections: the customer list and a customer's subscriptions -----------------------------------------

BASE = "https://api.partnercenter.microsoft.com"


def with_next(uri, headers=None, method="GET"):
    return {"items": [], "links": {"next": {"uri": uri, "method": method, "headers": headers or []}}}


def test_next_page_is_the_links_uri_with_its_continuation_header():
    body = with_next("/v1/customers?size=40&seekOperation=Next", [{"key": "MS-ContinuationToken", "value": "tok=="}])
    assert next_page(body, BASE) == ("/v1/customers?size=40&seekOperation=Next", {"MS-ContinuationToken": "tok=="})


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("/customers?size=40&seekOperation=Next", "/v1/customers?size=40&seekOperation=Next"),
        ("customers?size=40", "/v1/customers?size=40"),
        ("/V1/customers?size=40", "/V1/customers?size=40"),
        (f"{BASE}/v1/customers?size=40&seekOperation=Next", "/v1/customers?size=40&seekOperation=Next"),
    ],
)
def test_next_page_puts_the_version_in_front_when_the_uri_leaves_it_out(uri, target):
    assert next_page(with_next(uri), BASE)[0] == target


@pytest.mark.parametrize("body", [{"items": []}, {"links": {"self": {"uri": "/v1/customers?size=40"}}}, {"links": []}])
def test_the_last_page_has_no_next(body):
    assert next_page(body, BASE) is None


@pytest.mark.parametrize(
    "link",
    [
        with_next("https://elsewhere.example/v1/customers?size=40"),
        with_next("http://api.partnercenter.microsoft.com/v1/customers?size=40"),  # not even another scheme
        with_next("/v1/customers?size=40", method="POST"),
        with_next(""),
        {"links": {"next": {"method": "GET"}}},
    ],
)
def test_a_next_link_that_cannot_be_followed_safely_is_an_upstream_error(link):
    with pytest.raises(UpstreamUnavailableError):
        next_page(link, BASE)


def test_next_page_never_replaces_the_clients_own_headers_nor_forges_one():
    body = with_next(
        "/v1/customers",
        [
            {"key": "Authorization", "value": "Bearer stolen"},
            {"key": "MS-RequestId", "value": "x"},
            {"key": "X-Evil", "value": "a\r\nInjected: 1"},
            {"key": "MS-ContinuationToken", "value": "t"},
            "not a header",
        ],
    )
    assert next_page(body, BASE)[1] == {"MS-ContinuationToken": "t"}


def listed(partner_center, n, prefix="Customer"):
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for number, customer_id in enumerate(ids):
        partner_center.directory.add_customer(customer_id, f"{prefix} {number}", f"c{number}.onmicrosoft.com")
    return ids


def test_list_customers_pages_to_the_last_page(app_env, partner_center):
    ids = listed(partner_center, 23)
    client = runtime.get_runtime().client

    pages = list(client.list_customers(correlation_id=str(uuid.uuid4()), size=5))

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [c.id for page in pages for c in page] == ids
    assert pages[4][2].company_profile.company_name == "Customer 22"
    assert pages[4][2].company_profile.domain == "c22.onmicrosoft.com"
    first, *following = partner_center.requests_to("/v1/customers", "GET")
    assert len(following) == 4 and first.query == {"size": "5"} and "MS-ContinuationToken" not in first.headers
    assert all(r.query == {"size": "5", "seekOperation": "Next"} for r in following)
    assert len({r.headers["MS-ContinuationToken"] for r in following}) == 4
    assert len({r.headers["MS-RequestId"] for r in [first, *following]}) == 5  # one request id per page
    assert len({r.headers["MS-CorrelationId"] for r in [first, *following]}) == 1


def test_a_page_that_sends_the_same_next_page_again_stops_paging(app_env, partner_center):
    page = with_next("/v1/customers?size=5&seekOperation=Next", [{"key": "MS-ContinuationToken", "value": "same"}])
    page["items"] = [{"id": str(uuid.uuid4()), "companyProfile": {"companyName": "Loop"}}]
    partner_center.fail_next(3, 200, page, match="/v1/customers")
    client = runtime.get_runtime().client

    with pytest.raises(UpstreamUnavailableError, match="same next page twice"):
        list(client.list_customers(correlation_id=str(uuid.uuid4()), size=5))
    assert len(partner_center.requests_to("/v1/customers")) == 2


def test_a_customer_item_without_an_id_is_left_out(app_env, partner_center):
    page = {"totalCount": 2, "items": [{"companyProfile": {"companyName": "No id"}}, {"id": "abc"}]}
    partner_center.fail_next(1, 200, page, match="/v1/customers")
    [customers] = list(runtime.get_runtime().client.list_customers(correlation_id=str(uuid.uuid4())))
    assert [c.id for c in customers] == ["abc"]


def test_get_subscriptions_reads_offer_and_status_and_retries_with_the_same_request_id(app_env, partner_center):
    [customer_id] = listed(partner_center, 1)
    partner_center.directory.add_customer(
        customer_id,
        "Contoso",
        "contoso.onmicrosoft.com",
        [
            {"id": "s1", "offerId": "MS-AZR-0145P", "offerName": "Microsoft Azure", "quantity": 1, "status": "active"},
            {"id": "s2", "offerId": "DZH318Z0BPS6:0001:DZH318Z0BML6", "status": "suspended", "quantity": True},
        ],
    )
    partner_center.directory.fail_subscriptions(customer_id, 503, code="503", description="unavailable")

    subscriptions = runtime.get_runtime().client.get_subscriptions(customer_id, correlation_id=str(uuid.uuid4()))

    assert [(s.id, s.offer_id, s.status, s.quantity) for s in subscriptions] == [
        ("s1", "MS-AZR-0145P", "active", 1),
        ("s2", "DZH318Z0BPS6:0001:DZH318Z0BML6", "suspended", None),
    ]
    failed, answered = partner_center.requests_to(f"/v1/customers/{customer_id}/subscriptions", "GET")
    assert failed.headers["MS-RequestId"] == answered.headers["MS-RequestId"]
    assert "Content-Type" not in answered.headers  # a GET has no body


def test_a_customer_partner_center_refuses_is_its_error(app_env, partner_center):
    with pytest.raises(PartnerCenterError) as info:
        runtime.get_runtime().client.get_subscriptions(str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))
    assert (info.value.status, info.value.error_code) == (403, "20002") and not info.value.token_rejected


def test_collection_reads_go_through_the_same_pace_limiter(app_env, partner_center):
    [customer_id] = listed(partner_center, 1)
    pace = PaceLimiter(PaceRules(initial=50.0, maximum=50.0))
    client = PartnerCenterClient(
        base_url=partner_center.url,
        session=requests.Session(),
        tokens=runtime.get_runtime().tokens,
        policy=RetryPolicy(max_attempts=1),
        pace=pace,
    )
    partner_center.directory.fail_subscriptions(customer_id, 429, retry_after="1")

    with pytest.raises(PartnerCenterError):
        client.get_subscriptions(customer_id, correlation_id=str(uuid.uuid4()))
    # A read about a customer: that customer is held for Retry-After, and the rate cut gently, as any call's 429.
    assert pace.hold_left(customer_id) > 0 and pace.rate < 50.0 and pace.waiting().paused_for == 0
    client.get_subscriptions(customer_id, correlation_id=str(uuid.uuid4()))
    throttled, admitted = partner_center.requests_to("subscriptions", "GET")
    assert admitted.received_at - throttled.received_at >= 1.0  # held back for Retry-After

    # The customer list is about no customer: its 429 is the partner's limit, and every call waits.
    partner_center.throttle_next(1, retry_after="2", match="/v1/customers")
    with pytest.raises(PartnerCenterError):
        list(client.list_customers(correlation_id=str(uuid.uuid4())))
    assert pace.waiting().paused_for > 1.0


def test_a_refused_token_on_a_read_is_retried_once_with_a_fresh_one(app_env, partner_center, entra):
    listed(partner_center, 2)
    partner_center.fail_next(1, 401, {"code": "900420", "description": "Invalid Token"}, match="/v1/customers")

    [customers] = list(runtime.get_runtime().client.list_customers(correlation_id=str(uuid.uuid4())))

    assert len(customers) == 2 and entra.token_requests == 2  # the first token, then a fresh one after the 401


def test_error_data_and_source_are_kept():
    data = [{"code": "900105", "description": "Subscription 6c4e... is suspended."}]
    error = error_from_response(
        response(403, {"code": 900105, "description": "Suspended.", "data": data, "source": "PartnerFD"})
    )
    assert (error.data, error.source) == (data, "PartnerFD")
    bare = error_from_response(response(429, {"statusCode": 429, "message": "Rate limit is exceeded."}))
    assert (bare.data, bare.source) == ([], None)
    huge = error_from_response(response(400, {"code": "1", "description": "d", "data": ["x" * 5000], "source": "PC"}))
    assert huge.data == [] and huge.source == "PC"  # too big to pass on: dropped, not cut into invalid JSON
