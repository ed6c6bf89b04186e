"""Campaigns through the functions: the name on the create route's body and the queue message, recorded and listed,
carried by outcome messages, and the summary route ``GET /api/campaigns/{name}`` answering from the kept counts."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from sandbox import CUSTOMER_ID
from shared.settings import Settings
from shared.store.records import parse_iso
from shared.upgrades import runtime
from tests.harness import FAST_POLICY, Host, use_unreachable_storage

OTHER = "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a"
SUMMARY_KEYS = {
    "campaign",
    "upgrades",
    "counts",
    "firstAcceptedAt",
    "lastAcceptedAt",
    "lastEndedAt",
    "medianMinutesToEnd",
    "estimatedEndAt",
}


def summary(app: Any, name: str) -> tuple[int, dict[str, Any], Any]:
    response = app.http("get_campaign_summary", "GET", f"/api/campaigns/{name}", route_params={"name": name})
    return response.status_code, json.loads(response.get_body()), response


def listing(app: Any, **params: str) -> tuple[int, dict[str, Any]]:
    response = app.http("list_product_upgrades", "GET", "/api/productupgrades", params=params)
    return response.status_code, json.loads(response.get_body())


def test_a_campaign_from_http_and_the_queue_is_recorded_listed_summarised_and_in_every_outcome(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(1)
    customers = [str(uuid.UUID(int=0xCA << 64 | n)) for n in range(4)]
    host = Host(azurite.connection_string)
    assert stored_app.create({"customerId": customers[0], "campaign": "Wave-1"}).status_code == 202
    host.send_request({"customerId": customers[1], "campaign": "wave-1", "requestId": "crm-1"})
    host.send_request({"customerId": customers[2], "campaign": "WAVE-1"})
    host.send_request({"customerId": customers[3]})  # no campaign
    host.run_until(lambda: len(host.results) == 3, timeout=30)

    status, body, _ = summary(stored_app, "wave-1")
    assert status == 200 and set(body) == SUMMARY_KEYS
    assert body["upgrades"] == 3 and body["counts"]["running"] + body["counts"]["completed"] == 3
    assert body["campaign"] in {"Wave-1", "wave-1", "WAVE-1"}
    host.run_until(lambda: len(host.outcomes) == 4, timeout=30)

    status, body, _ = summary(stored_app, "Wave-1")
    assert status == 200
    assert body["counts"] == {"running": 0, "completed": 3, "partial": 0, "failed": 0, "expired": 0}
    assert body["estimatedEndAt"] == body["lastEndedAt"] and body["medianMinutesToEnd"] is not None
    assert parse_iso(body["firstAcceptedAt"]) <= parse_iso(body["lastAcceptedAt"]) <= parse_iso(body["lastEndedAt"])

    by_customer = {o["customerId"]: o for o in host.outcomes}
    assert [by_customer[c]["campaign"] for c in customers] == ["Wave-1", "wave-1", "WAVE-1", None]
    status, page = listing(stored_app, campaign="wave-1")
    assert status == 200 and {item["customerId"] for item in page["items"]} == set(customers[:3])
    assert {item["campaign"] for item in page["items"]} == {"Wave-1", "wave-1", "WAVE-1"}
    status, page = listing(stored_app)
    assert {item["customerId"]: item["campaign"] for item in page["items"]}[customers[3]] is None


def test_summary_of_an_unknown_campaign_is_a_404_problem(stored_app):
    assert stored_app.create({"customerId": CUSTOMER_ID, "campaign": "wave-1"}).status_code == 202
    status, body, response = summary(stored_app, "wave-2")
    assert status == 404 and response.mimetype == "application/problem+json"
    assert body["type"].endswith(":not_found") and "wave-2" in body["detail"]


@pytest.mark.parametrize("name", ["-wave", "a" * 65, "wave#1", "été"])
def test_summary_of_a_bad_name_is_a_400_problem(stored_app, name):
    status, body, response = summary(stored_app, name)
    assert status == 400 and response.mimetype == "application/problem+json"
    assert body["type"].endswith(":invalid_request") and "campaign name" in body["detail"]


def test_summary_with_storage_down_is_503_with_retry_after(monkeypatch, app_env):
    use_unreachable_storage(monkeypatch)
    status, body, response = summary(app_env, "wave-1")
    assert status == 503 and int(response.headers["Retry-After"]) > 0
    assert body["type"].endswith(":storage_unavailable")


def test_summary_without_storage_is_503(app_env):
    status, _, response = summary(app_env, "wave-1")
    assert status == 503 and response.headers["Retry-After"]


@pytest.mark.parametrize("campaign", ["", " wave", "wave/1", 7, ["wave"], "x" * 65])
def test_create_with_a_bad_campaign_is_a_400_and_partner_center_is_not_called(app_env, campaign):
    response = app_env.create({"customerId": CUSTOMER_ID, "campaign": campaign})
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert "campaign" in json.loads(response.get_body())["detail"]
    assert app_env.partner_center.requests == []


@pytest.mark.parametrize("campaign", ["", "-wave", 7])
def test_a_queue_message_with_a_bad_campaign_is_rejected_invalid_request(app_env, campaign):
    result = json.loads(app_env.queue({"customerId": CUSTOMER_ID, "requestId": "crm-9", "campaign": campaign}))
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"
    assert "campaign" in result["error"]["message"] and result["requestId"] == "crm-9"
    assert app_env.partner_center.requests == []


@pytest.mark.parametrize("params", [{"campaign": "-x"}, {"campaign": "a" * 65}, {"campaign": "wave/1"}])
def test_listing_with_a_bad_campaign_is_400(stored_app, params):
    status, body = listing(stored_app, **params)
    assert status == 400 and "campaign" in body["detail"]


def test_a_refused_request_is_recorded_under_its_campaign(stored_app):
    stored_app.partner_center.set_ineligible(OTHER, "No legacy subscription.", create_status=403, create_code=900108)
    result = json.loads(stored_app.queue({"customerId": OTHER, "requestId": "crm-3", "campaign": "Wave-1"}))
    assert result["status"] == "rejected"
    [record] = runtime.get_runtime().ledger.campaign_requests("wave-1")
    assert (record.status, record.error_code, record.customer_id) == ("rejected", "not_eligible", OTHER)
    assert record.campaign is not None and record.campaign.name == "Wave-1"
    status, _, _ = summary(stored_app, "wave-1")
    assert status == 404  # a refusal is no upgrade: the summary counts upgrades


def test_a_deferred_request_keeps_its_campaign(monkeypatch, stored_app, azurite):
    monkeypatch.setenv("PRODUCT_UPGRADE_DEFER_SECONDS", "1")
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    stored_app.partner_center.complete_after_polls(0)
    stored_app.partner_center.set_customer_error(CUSTOMER_ID, 403, 900130, "Purchased recently; try again later.")
    host = Host(azurite.connection_string)
    host.send_request({"customerId": CUSTOMER_ID, "requestId": "crm-4", "campaign": "Wave-1"})
    host.run_once()
    [deferred] = [json.loads(m.content) for m in host.requests.peek_messages()] or [None]
    assert host.results == [] and (deferred is None or deferred["campaign"] == "Wave-1")
    stored_app.partner_center.clear_customer_error(CUSTOMER_ID)
    host.run_until(lambda: len(host.outcomes) == 1, timeout=30)
    assert host.results[0]["status"] == "accepted" and host.outcomes[0]["campaign"] == "Wave-1"
    assert summary(stored_app, "wave-1")[1]["counts"]["completed"] == 1
