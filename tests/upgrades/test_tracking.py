"""Following upgrades to their end: status checks on the tracking queue, the ledger's state, one outcome each.

Everything runs through Azurite (real queues, real table) and the loopback Partner Center, with a status check
every second (``stored_app``) and the host's queue loop from ``tests.harness.Host``.
"""

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient

from sandbox import CUSTOMER_ID
from shared.models import ProductUpgradeCreated
from shared.retry import RetryPolicy
from shared.settings import Settings, StorageConnection
from shared.store.records import utc_now
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime
from shared.upgrades.checks import TrackingCheck
from shared.upgrades.tracking import MAX_WRITES
from tests.harness import FAST_POLICY, Host, run_tracking_function, use_unreachable_storage

OTHER_CUSTOMER = "00000000-0000-0000-0000-0000000000d2"
#: The contract's budget (45 s per call with its retries), fast backoff: a Retry-After of 30 s fits in it.
PRODUCTION_LIKE_POLICY = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


def ledger_of(azurite) -> TableLedger:
    return TableLedger(
        StorageConnection(connection_string=azurite.connection_string), runtime.get_runtime().settings.table_name
    )


def listing(app, **params):
    response = app.http("list_product_upgrades", "GET", "/api/productupgrades", params=params)
    return response.status_code, json.loads(response.get_body())


def outcome_keys():
    return {
        "outcome",
        "outcomeId",
        "upgradeId",
        "customerId",
        "productFamily",
        "campaign",
        "requestId",
        "correlationId",
        "partnerCenterStatus",
        "acceptedAt",
        "endedAt",
        "lineItems",
        "errorDetails",
    }


def test_http_upgrade_is_followed_to_completed_with_one_outcome(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(2)
    host = Host(azurite.connection_string)
    response = stored_app.create(
        {"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "crm-1", "MS-CorrelationId": "corr-1"}
    )
    assert response.status_code == 202
    upgrade_id = json.loads(response.get_body())["upgradeId"]
    # recorded running at once; updatedAt equals acceptedAt until the first check
    status, body = listing(stored_app)
    [item] = body["items"]
    assert status == 200 and item["state"] == "running" and item["updatedAt"] == item["acceptedAt"]
    assert (item["requestId"], item["correlationId"], item["endedAt"]) == ("crm-1", "corr-1", None)

    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()  # nothing more may come
    [outcome] = host.outcomes
    assert set(outcome) == outcome_keys()
    assert outcome["outcome"] == "completed" and outcome["upgradeId"] == upgrade_id
    assert (outcome["requestId"], outcome["correlationId"]) == ("crm-1", "corr-1")
    assert outcome["partnerCenterStatus"] == "Completed" and outcome["endedAt"]
    assert outcome["lineItems"][0]["targetProduct"]["name"] == "Microsoft Azure plan"
    assert host.deliveries["tracking"] == 3  # InProgress, InProgress, Completed
    [item] = listing(stored_app)[1]["items"]
    assert item["state"] == "completed" and item["partnerCenterStatus"] == "Completed" and item["endedAt"]


def test_queue_upgrade_is_followed_to_completed_with_one_outcome(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(1)
    host = Host(azurite.connection_string)
    message_id = host.send_request({"customerId": CUSTOMER_ID, "requestId": "row-9"})
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()
    [result] = host.results
    [outcome] = host.outcomes
    assert result["status"] == "accepted" and result["messageId"] == message_id
    assert outcome["outcome"] == "completed" and outcome["upgradeId"] == result["upgradeId"]
    assert outcome["requestId"] == "row-9" and outcome["correlationId"] == result["correlationId"]
    request = ledger_of(azurite).get_request(_queue_request_id("row-9"))
    assert request is not None and request.status == "accepted" and request.upgrade_id == result["upgradeId"]


def _queue_request_id(key: str) -> str:
    from shared.ids import request_id_for

    return request_id_for("queue-request", key)


def test_failed_upgrade_gives_a_failed_outcome_with_partner_centers_details(stored_app, azurite):
    host = Host(azurite.connection_string)
    upgrade_id = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    details = {"code": "900114", "message": "The upgrade failed: subscription is disabled."}
    stored_app.partner_center.set_upgrade_status(upgrade_id, "Failed", error_details=details)
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    [outcome] = host.outcomes
    assert outcome["outcome"] == "failed" and outcome["partnerCenterStatus"] == "Failed"
    assert outcome["errorDetails"]["code"] == "900114"
    assert "subscription is disabled" in json.dumps(outcome["errorDetails"])
    assert listing(stored_app, state="failed")[1]["items"][0]["upgradeId"] == upgrade_id


def test_upgrade_unknown_at_partner_center_ends_failed(stored_app, azurite):
    host = Host(azurite.connection_string)
    upgrade_id = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    del stored_app.partner_center.upgrades[upgrade_id.lower()]
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    [outcome] = host.outcomes
    assert outcome["outcome"] == "failed" and outcome["errorDetails"]["code"] == "900106"


def test_upgrade_running_past_the_window_expires(monkeypatch, stored_app, azurite):
    monkeypatch.setenv("PRODUCT_UPGRADE_TRACKING_HOURS", str(2.5 / 3600))  # 2.5 seconds
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    host = Host(azurite.connection_string)
    upgrade_id = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    [outcome] = host.outcomes
    assert outcome["outcome"] == "expired" and outcome["upgradeId"] == upgrade_id
    # the last status seen is kept
    assert outcome["partnerCenterStatus"] == "InProgress" and outcome["lineItems"]
    assert host.deliveries["tracking"] >= 2


def test_transient_failures_reschedule_and_never_reach_the_poison_queue(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    stored_app.partner_center.fail_next(
        6, 503, {"code": "500", "description": "Service unavailable."}, match="/status"
    )  # more than one check's bounded attempts
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=45)
    [outcome] = host.outcomes
    assert outcome["outcome"] == "completed"
    assert host.raised == 0  # every failure was rescheduled by the function itself, none left to the host
    assert host.deliveries["tracking"] >= 2


def test_a_failed_check_counts_as_looked_at_so_throttling_is_not_taken_for_stopped_tracking(stored_app, azurite):
    host, message = _one_check(stored_app, azurite)
    stored_app.partner_center.fail_next(6, 503, {"code": "500", "description": "Service unavailable."}, match="/status")
    ledger = ledger_of(azurite)
    [before] = ledger.list_upgrades().items
    run_tracking_function(message)
    [after] = ledger.list_upgrades().items
    assert after.updated_at > before.updated_at and after.checks == before.checks == 0
    assert host.tracking.get_queue_properties().approximate_message_count == 2  # in flight + the retry


def _one_check(stored_app, azurite):
    """Accept one upgrade and take its first tracking message off the queue (as a racing host would)."""
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    tracking: QueueClient = host.tracking
    messages = []
    while not messages:
        messages = list(tracking.receive_messages(max_messages=1, visibility_timeout=60))
    return host, messages[0]


def test_the_same_tracking_message_delivered_twice_gives_one_outcome(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(0)
    host, message = _one_check(stored_app, azurite)
    run_tracking_function(message)
    run_tracking_function(message)  # redelivered (the host lost the delete)
    host.run_once()
    assert [o["outcome"] for o in host.outcomes] == ["completed"]
    assert stored_app.partner_center.status_polls == 1  # the second delivery saw it had ended


def test_two_workers_racing_on_one_check_give_one_outcome(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(0)
    host, message = _one_check(stored_app, azurite)
    barrier = threading.Barrier(4)

    def worker():
        barrier.wait()
        run_tracking_function(message)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    host.run_once()
    assert [o["outcome"] for o in host.outcomes] == ["completed"]


def test_racing_running_checks_leave_one_chain_of_checks(stored_app, azurite):
    host, message = _one_check(stored_app, azurite)  # the fake keeps it InProgress
    threads = [threading.Thread(target=run_tracking_function, args=(message,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # the losers took back the next checks they had scheduled: one next check remains
    stored_app.partner_center.complete_after_polls(0)
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()
    assert len(host.outcomes) == 1
    record = ledger_of(azurite).list_upgrades().items[0]
    assert record.state == "completed"


# Storage's answer to a write lost or late, after the write landed: the client cannot tell, and the SDK tries
# again. The proxy carries the write out at Azurite, then loses or holds back its answer.
UPGRADE_ROW_PATH = "RowKey='upgrade'"


def _accepted(stored_app, azurite, in_progress_polls: int) -> Host:
    """One upgrade accepted, which Partner Center reports running ``in_progress_polls`` times, then Completed."""
    stored_app.partner_center.complete_after_polls(in_progress_polls)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    return host


def _outcomes(host: Host) -> list[str]:
    """Run the host until the first outcome, then once more (nothing more may come): the outcomes."""
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    host.run_once()
    return [o["outcome"] for o in host.outcomes]


def test_a_lost_answer_to_the_claim_still_sends_the_outcome_once(stored_app, azurite, storage_proxy):
    # The resent claim meets the record the lost one wrote: the worker's own write, not another worker's.
    host = _accepted(stored_app, azurite, 0)
    lost = storage_proxy.lose_answer("table", "PUT", UPGRADE_ROW_PATH)
    assert _outcomes(host) == ["completed"] and lost.hits == 1
    [record] = ledger_of(azurite).list_upgrades().items
    assert record.state == "completed" and record.outcome_sent
    # the SDK sent it again under the same client request id (tests/test_load.py counts such tries as one)
    first, again = storage_proxy.requests_to("table", "PUT", UPGRADE_ROW_PATH)[:2]
    assert first.carried_out and again.carried_out and first.client_request_id == again.client_request_id


def test_a_lost_answer_to_the_first_record_of_an_upgrade_still_follows_it(stored_app, azurite, storage_proxy, caplog):
    # The transaction recording the accepted upgrade lands, its answer never comes: the ledger sends it again (the
    # SDK never resends a POST) and it fails on its own first copy. That is not a twin having recorded it first.
    lost = storage_proxy.lose_answer("table", "POST", "$batch")
    host = _accepted(stored_app, azurite, 0)
    assert lost.hits == 1
    assert "was already recorded" not in caplog.text
    assert _outcomes(host) == ["completed"]
    [record] = ledger_of(azurite).list_upgrades().items
    assert record.state == "completed" and record.outcome_sent


def test_a_lost_answer_to_a_running_check_keeps_the_chain_of_checks(stored_app, azurite, storage_proxy):
    host = _accepted(stored_app, azurite, 1)
    lost = storage_proxy.lose_answer("table", "PUT", UPGRADE_ROW_PATH)  # the first: check 1 recorded running
    assert _outcomes(host) == ["completed"] and lost.hits == 1
    assert stored_app.partner_center.status_polls == 2


@pytest.mark.parametrize("in_progress_polls", [1, 2], ids=["claim", "running update"])
def test_a_late_write_of_the_previous_check_does_not_end_the_chain(
    stored_app, azurite, storage_proxy, in_progress_polls, caplog
):
    # Check 1 schedules check 2, then its record of "running" is slow to land. Check 2 reads the record before
    # it lands and writes after it: its conditional write fails against a worker that knew less than it did.
    # That is not a race lost to another delivery of check 2: it writes again on the fresh record.
    stored_app.partner_center.complete_after_polls(in_progress_polls)
    host, first = _one_check(stored_app, azurite)
    storage_proxy.hold("table", "PUT", UPGRADE_ROW_PATH, 3.0)  # check 1's record lands at ~3 s
    storage_proxy.hold("table", "PUT", UPGRADE_ROW_PATH, 5.0)  # check 2's write, after its read at ~1 s
    worker = threading.Thread(target=run_tracking_function, args=(first,))
    worker.start()
    second = []
    while not second:  # check 2, visible a second after check 1 scheduled it
        second = list(host.tracking.receive_messages(max_messages=1, visibility_timeout=60))
    run_tracking_function(second[0])
    worker.join(30)
    assert _outcomes(host) == ["completed"]
    assert "an earlier check's write landed before check 2's; writing again" in caplog.text  # the race happened
    [record] = ledger_of(azurite).list_upgrades().items
    assert record.state == "completed" and record.outcome_sent


def test_a_record_that_keeps_changing_leaves_the_check_for_later(stored_app, azurite, storage_proxy):
    host = _accepted(stored_app, azurite, 0)
    # every write of check 1 meets a changed record, yet the record read back never passed check 1
    refused = storage_proxy.fail_condition("table", "PUT", UPGRADE_ROW_PATH, times=MAX_WRITES)
    assert _outcomes(host) == ["completed"] and refused.hits == MAX_WRITES
    assert stored_app.partner_center.status_polls == 2  # the check, tried again later


def test_an_outcome_answered_late_is_sent_once(stored_app, azurite, storage_proxy):
    # Azurite on a loaded machine has kept queue writes waiting past 5 s (up to 11 s); a client that gives up
    # before storage's own deadline sends the outcome again, and it arrives twice.
    host = _accepted(stored_app, azurite, 0)
    outcomes_path = f"/{os.environ['PRODUCT_UPGRADE_OUTCOMES_QUEUE']}/messages"
    late = storage_proxy.answer_late("queue", "POST", outcomes_path, 7.0)
    assert _outcomes(host) == ["completed"] and late.hits == 1
    assert storage_proxy.counts[("queue", "POST")] == 2  # the first check, then the outcome: once


def test_a_malformed_tracking_message_is_dropped_not_retried(stored_app, azurite):
    host = Host(azurite.connection_string)
    host.tracking.send_message("not json")
    host.tracking.send_message(json.dumps({"upgradeId": "x"}))
    host.run_once()
    assert host.raised == 0 and host.outcomes == []
    assert host.tracking.get_queue_properties().approximate_message_count == 0


def test_a_replay_is_not_tracked_twice(stored_app, azurite):
    host = Host(azurite.connection_string)
    for _ in range(3):
        assert stored_app.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "k-1"}).status_code == 202
    assert host.tracking.get_queue_properties().approximate_message_count == 1


def test_an_upgrade_already_running_from_our_own_request_is_not_tracked_twice(stored_app, azurite):
    host = Host(azurite.connection_string)
    first = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())
    # another request for the customer meets 409 900109 and is answered with the running upgrade
    second = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())
    assert first["upgradeId"] == second["upgradeId"]
    assert host.tracking.get_queue_properties().approximate_message_count == 1
    assert len(listing(stored_app)[1]["items"]) == 1


def test_900109_without_eligibility_names_the_upgrade_from_the_description(stored_app, azurite):
    running = "5b1d5c52-8e3b-4f7e-a0c1-2f1d6c9f3b10"
    stored_app.partner_center.set_customer_error(
        CUSTOMER_ID, 409, 900109, f"The original upgrade {running} is in progress.", operations=("create",)
    )
    result = json.loads(stored_app.queue({"customerId": CUSTOMER_ID}))
    assert result["status"] == "accepted" and result["upgradeId"] == running


# -- deferral ---------------------------------------------------------------------------------------------------
def _deferring_runtime(monkeypatch, policy=None, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # a short budget per call, so a Retry-After of a few seconds outlasts it, as 600 s outlasts 120 s in Azure
    policy = policy or RetryPolicy(backoff_base=0.01, backoff_max=0.05, total_budget=2.0)
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=policy, poll_interval_seconds=1))


def test_throttled_past_the_budget_defers_then_ends_accepted(monkeypatch, stored_app, azurite):
    _deferring_runtime(monkeypatch)
    host = Host(azurite.connection_string)
    stored_app.partner_center.throttle_next(1, retry_after="3", match="/v1/productupgrades")
    message_id = host.send_request({"customerId": CUSTOMER_ID, "correlationId": "c-7"})
    host.run_once()
    assert host.results == [] and host.raised == 0  # deferred: no result yet, nothing for the host to retry
    assert host.requests.get_queue_properties().approximate_message_count == 1
    assert list(host.requests.peek_messages()) == []  # invisible until Retry-After has passed
    host.run_until(lambda: len(host.results) >= 1, timeout=20)
    [result] = host.results
    assert result["status"] == "accepted"
    assert (result["messageId"], result["correlationId"]) == (message_id, "c-7")
    sent = {r.header("MS-RequestId") for r in stored_app.partner_center.requests_to("/v1/productupgrades", "POST")}
    assert len(sent) == 1  # the same MS-RequestId before and after the deferral
    assert len(stored_app.partner_center.created_upgrades) == 1


def test_a_customer_partner_center_throttles_on_its_own_is_deferred_not_waited_for(monkeypatch, stored_app, azurite):
    _deferring_runtime(monkeypatch, policy=PRODUCTION_LIKE_POLICY)  # 30 s would fit its budget: it must not wait
    held = "00000000-0000-0000-0000-0000000000e5"
    stored_app.partner_center.throttle_customer(held, "30")
    host = Host(azurite.connection_string)
    held_message = host.send_request({"customerId": held, "correlationId": "held"})
    others = [host.send_request({"customerId": str(uuid.uuid4())}) for _ in range(6)]
    started = time.monotonic()
    host.run_once()
    assert time.monotonic() - started < 20  # nobody slept through the held customer's 30 s
    assert sorted(r["messageId"] for r in host.results) == sorted(others)  # the rest of the campaign went on
    assert all(r["status"] == "accepted" for r in host.results) and host.raised == 0
    # The held customer's request is back on the queue, out of sight until its Retry-After, keeping its identity.
    assert host.requests.get_queue_properties().approximate_message_count == 1
    assert list(host.requests.peek_messages()) == []
    assert len(stored_app.partner_center.requests_to("/v1/productupgrades", "POST")) == 7  # one call for it
    assert held_message not in {r["messageId"] for r in host.results}


def test_a_status_check_of_a_held_customer_is_scheduled_after_the_hold(monkeypatch, stored_app, azurite):
    _deferring_runtime(monkeypatch, policy=PRODUCTION_LIKE_POLICY)
    host, message = _one_check(stored_app, azurite)
    stored_app.partner_center.throttle_customer(CUSTOMER_ID, "30")
    started = time.monotonic()
    run_tracking_function(message)
    assert time.monotonic() - started < 20  # the check was not waited for
    assert len(stored_app.partner_center.requests_to("/status", "POST")) == 1
    assert host.tracking.get_queue_properties().approximate_message_count == 2  # in flight + the next check
    assert list(host.tracking.peek_messages()) == []  # out of sight: after Retry-After


def test_throttling_that_only_used_up_the_attempts_goes_back_to_the_host(stored_app, azurite):
    host = Host(azurite.connection_string)
    stored_app.partner_center.throttle_next(5, retry_after="0", match="/v1/productupgrades")
    host.send_request({"customerId": CUSTOMER_ID})
    host.run_once()
    assert host.results == [] and host.raised == 1  # not deferred: the host retries it after its visibility timeout
    host.run_until(lambda: len(host.results) >= 1, timeout=20)
    assert host.results[0]["status"] == "accepted"


def test_a_retry_after_of_ten_minutes_keeps_the_message_out_of_sight(monkeypatch, stored_app, azurite):
    _deferring_runtime(monkeypatch)
    host = Host(azurite.connection_string)
    stored_app.partner_center.throttle_next(1, retry_after="600", match="/v1/productupgrades")
    host.send_request({"customerId": CUSTOMER_ID})
    host.run_once()
    assert host.results == [] and host.raised == 0
    assert host.requests.get_queue_properties().approximate_message_count == 1
    assert list(host.requests.peek_messages()) == []


def test_try_again_later_defers_then_ends_accepted(monkeypatch, stored_app, azurite):
    _deferring_runtime(monkeypatch, PRODUCT_UPGRADE_DEFER_SECONDS="1")
    host = Host(azurite.connection_string)
    stored_app.partner_center.set_customer_error(
        CUSTOMER_ID, 403, 900130, "Subscriptions were purchased recently; please try again later."
    )
    message_id = host.send_request({"customerId": CUSTOMER_ID, "requestId": "crm-900130"})
    host.run_once()
    assert host.results == []
    stored_app.partner_center.clear_customer_error(CUSTOMER_ID)
    host.run_until(lambda: len(host.results) >= 1, timeout=20)
    [result] = host.results
    assert result["status"] == "accepted" and result["messageId"] == message_id and result["requestId"] == "crm-900130"


@pytest.mark.parametrize(
    ("status", "code", "expected_status", "expected_code"),
    [(403, 900130, "rejected", "try_again_later"), (429, None, "failed", "throttled")],
)
def test_deferrals_used_up_end_with_one_result(
    monkeypatch, stored_app, azurite, status, code, expected_status, expected_code
):
    _deferring_runtime(monkeypatch, PRODUCT_UPGRADE_DEFER_SECONDS="1", PRODUCT_UPGRADE_MAX_DEFERRALS="2")
    host = Host(azurite.connection_string)
    if status == 429:
        stored_app.partner_center.throttle_next(100, retry_after="3", match="/v1/productupgrades")
    else:
        stored_app.partner_center.set_customer_error(CUSTOMER_ID, status, code, "Try again later.")
    message_id = host.send_request({"customerId": CUSTOMER_ID})
    host.run_until(lambda: len(host.results) >= 1, timeout=30)
    host.run_once()
    [result] = host.results
    assert result["status"] == expected_status and result["messageId"] == message_id
    assert result["error"]["code"] == expected_code and result["error"]["retryable"] is True
    assert host.deliveries["requests"] == 3  # the first try and two deferrals


# -- listing ----------------------------------------------------------------------------------------------------
def test_listing_pages_through_250_upgrades_exactly_once(stored_app, azurite):
    ledger = ledger_of(azurite)
    customers = [str(uuid.UUID(int=0xBEEF << 64 | n)) for n in range(250)]
    for n, customer in enumerate(customers):
        ledger.record_accepted(
            f"req-{n:03}",
            ProductUpgradeCreated(f"up-{n:03}", customer, "Azure"),
            caller_request_id=None,
            correlation_id="c",
        )
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"top": "100", **({"continuationToken": token} if token else {})}
        status, body = listing(stored_app, **params)
        assert status == 200 and len(body["items"]) <= 100
        seen += [item["upgradeId"] for item in body["items"]]
        pages += 1
        token = body["continuationToken"]
        if token is None:
            break
    assert pages == 3 and len(seen) == 250 and set(seen) == {f"up-{n:03}" for n in range(250)}
    # every key present, null where unknown
    item = listing(stored_app, top="1")[1]["items"][0]
    assert set(item) == {
        "upgradeId",
        "customerId",
        "productFamily",
        "campaign",
        "state",
        "partnerCenterStatus",
        "requestId",
        "correlationId",
        "acceptedAt",
        "updatedAt",
        "endedAt",
    }
    assert item["requestId"] is None and item["endedAt"] is None and item["campaign"] is None


def test_listing_filters_by_state_and_customer(stored_app, azurite):
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    stored_app.create({"customerId": OTHER_CUSTOMER})
    assert [i["customerId"] for i in listing(stored_app, state="completed")[1]["items"]] == [CUSTOMER_ID]
    assert [i["customerId"] for i in listing(stored_app, state="running")[1]["items"]] == [OTHER_CUSTOMER]
    assert [i["state"] for i in listing(stored_app, customerId=OTHER_CUSTOMER)[1]["items"]] == ["running"]
    assert listing(stored_app, state="failed", customerId=CUSTOMER_ID)[1] == {"items": [], "continuationToken": None}


@pytest.mark.parametrize(
    "params",
    [
        {"state": "done"},
        {"top": "0"},
        {"top": "1001"},
        {"top": "ten"},
        {"customerId": "acme"},
        {"continuationToken": "not-a-token"},
        {"continuationToken": "eyJ2IjoidjIifQ"},
    ],
)
def test_listing_rejects_bad_parameters_with_400(stored_app, params):
    response = stored_app.http("list_product_upgrades", "GET", "/api/productupgrades", params=params)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_listing_with_storage_down_is_503_with_retry_after(monkeypatch, app_env):
    use_unreachable_storage(monkeypatch)
    response = app_env.http("list_product_upgrades", "GET", "/api/productupgrades")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert json.loads(response.get_body())["type"].endswith("storage_unavailable")


def test_listing_without_storage_is_503(app_env):
    response = app_env.http("list_product_upgrades", "GET", "/api/productupgrades")
    assert response.status_code == 503


def test_tracking_check_messages_round_trip():
    check = TrackingCheck("u-1", CUSTOMER_ID, "Azure", str(uuid.uuid4()), check=3, failures=1)
    assert TrackingCheck.from_json(json.loads(json.dumps(check.to_json()))) == check


def test_an_outcome_claimed_by_a_worker_that_died_is_sent_once_the_claim_lapses(stored_app, azurite):
    from dataclasses import replace
    from datetime import timedelta

    from shared.store.records import utc_now

    host, message = _one_check(stored_app, azurite)
    ledger = ledger_of(azurite)
    [record] = ledger.list_upgrades().items
    # a worker claimed the outcome a while ago and died before sending it
    claimed_at = utc_now() - timedelta(minutes=10)
    died = replace(record, state="completed", ended_at=claimed_at, outcome_claimed_at=claimed_at, checks=1)
    assert ledger.update_upgrade(died) is not None
    run_tracking_function(message)
    run_tracking_function(message)  # and once more: already sent
    host.run_once()
    assert [o["outcome"] for o in host.outcomes] == ["completed"]
    assert stored_app.partner_center.status_polls == 0  # the ledger knew it had ended
    assert ledger.list_upgrades().items[0].outcome_sent


def test_a_fresh_claim_is_left_to_its_worker(stored_app, azurite):
    from dataclasses import replace

    from shared.store.records import utc_now

    host, message = _one_check(stored_app, azurite)
    ledger = ledger_of(azurite)
    [record] = ledger.list_upgrades().items
    now = utc_now()
    claimed = replace(record, state="completed", ended_at=now, outcome_claimed_at=now, checks=1)
    assert ledger.update_upgrade(claimed) is not None
    run_tracking_function(message)
    host.run_once()
    assert host.outcomes == []  # its worker may still send it: this delivery waits for the lease instead
    assert host.tracking.get_queue_properties().approximate_message_count == 2  # the original (in flight) + later


def test_tracking_with_storage_down_is_left_to_the_host_to_retry(monkeypatch, stored_app, azurite):
    host, message = _one_check(stored_app, azurite)
    use_unreachable_storage(monkeypatch)
    with pytest.raises(Exception, match="could not be"):
        run_tracking_function(message)


# -- only real ends end an upgrade --------------------------------------------------------------------------
def test_an_unknown_state_is_followed_like_a_running_one_until_it_completes(stored_app, azurite, caplog):
    stored_app.partner_center.set_interim_status(CUSTOMER_ID, "Provisioning")  # a state the app does not know
    stored_app.partner_center.complete_after_polls(2)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    assert _outcomes(host) == ["completed"]
    assert stored_app.partner_center.status_polls == 3  # Provisioning, Provisioning, Completed
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "'Provisioning'" in r.getMessage()]
    assert len(warnings) == 1  # once per value and process, not once per check


def test_an_unknown_state_that_never_ends_expires(monkeypatch, stored_app, azurite):
    monkeypatch.setenv("PRODUCT_UPGRADE_TRACKING_HOURS", str(2.5 / 3600))  # 2.5 seconds
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    stored_app.partner_center.set_interim_status(CUSTOMER_ID, "AwaitingReview")
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    [outcome] = host.outcomes
    assert (outcome["outcome"], outcome["partnerCenterStatus"]) == ("expired", "AwaitingReview")


def test_a_completed_upgrade_with_a_failed_subscription_ends_partial(stored_app, azurite):
    from sandbox.partner_center import LineOutcome

    details = {"code": "900114", "description": "The subscription could not be moved to the Azure plan."}
    lines = (LineOutcome("Completed"), LineOutcome("Failed", details))
    stored_app.partner_center.set_outcome(CUSTOMER_ID, "Completed", line_items=lines)
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    upgrade_id = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    assert _outcomes(host) == ["partial"]
    [outcome] = host.outcomes
    assert outcome["partnerCenterStatus"] == "Completed"
    moved, stayed = outcome["lineItems"]
    assert moved["status"] == "Completed" and stayed["status"] == "Failed"
    assert stayed["errorDetails"]["code"] == "900114" and stayed["sourceProduct"]["name"] == "AzureSubscription"
    status, body = listing(stored_app, state="partial")
    assert status == 200 and [i["upgradeId"] for i in body["items"]] == [upgrade_id]
    assert body["items"][0]["state"] == "partial" and listing(stored_app, state="completed")[1]["items"] == []


def _refusals_of_our_account(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "refused for our own account" in r.getMessage()
    ]


@pytest.mark.parametrize("code", [900308, 900309], ids=["insufficient privileges", "conditional access"])
def test_a_status_check_refused_for_our_own_account_is_retried_never_the_end(stored_app, azurite, caplog, code):
    stored_app.partner_center.complete_after_polls(0)
    stored_app.partner_center.set_customer_error(
        CUSTOMER_ID, 403, code, "The caller is not allowed to do this.", operations=("status",), times=2
    )
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=45)  # backoff: 1 s, then 2 s
    host.run_once()
    assert [o["outcome"] for o in host.outcomes] == ["completed"]
    refusals = _refusals_of_our_account(caplog)
    assert len(refusals) == 2 and f"403 {code}" in refusals[0]
    assert host.raised == 0


def test_a_status_check_refused_401_even_after_a_fresh_token_is_an_error_and_retried(stored_app, azurite, caplog):
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    stored_app.partner_center.fail_next(
        2, 401, {"code": "400", "description": "Invalid token.", "data": [], "source": "PartnerFD"}, match="/status"
    )  # the check's call, and its retry with a fresh token
    assert _outcomes(host) == ["completed"]
    [refusal] = _refusals_of_our_account(caplog)
    assert "401 400" in refusal
    assert len(stored_app.entra.requests_to("/oauth2/v2.0/token", "POST")) >= 2  # the token was refreshed


def test_a_refusal_ending_an_upgrade_keeps_partner_centers_error_data_and_source(stored_app, azurite):
    data = [{"upgradeId": "unknown", "reason": "NotFound"}]
    stored_app.partner_center.set_customer_error(
        CUSTOMER_ID, 404, 900106, "The upgrade was not found.", operations=("status",), data=data
    )
    host = Host(azurite.connection_string)
    stored_app.create({"customerId": CUSTOMER_ID})
    assert _outcomes(host) == ["failed"]
    assert host.outcomes[0]["errorDetails"] == {
        "code": "900106",
        "description": "The upgrade was not found.",
        "data": data,
        "source": "PartnerCenter",
    }


# -- checks slow down as an upgrade runs long -------------------------------------------------------------------
def test_poll_gap_is_the_poll_interval_for_an_hour_then_doubles_up_to_the_maximum():
    from shared.upgrades.tracking import poll_gap

    elapsed = (0, 1800, 3599, 3600, 4200, 5400, 7800, 11400, 10**6)
    assert [poll_gap(t, 300, 3600) for t in elapsed] == [300, 300, 300, 600, 1200, 2400, 3600, 3600, 3600]
    # each gap twice the one before, when the checks come on time
    moment, gaps = 3600.0, []
    while len(gaps) < 5:
        gaps.append(poll_gap(moment, 300, 36000))
        moment += gaps[-1]
    assert gaps == [600, 1200, 2400, 4800, 9600]
    assert poll_gap(10**6, 300, 100) == 300  # never more often than the poll interval
    assert poll_gap(1e300, 1e-300, 3600) <= 3600  # no overflow


def test_checks_of_an_upgrade_running_past_its_first_hour_come_less_often(stored_app, azurite, caplog):
    host, message = _one_check(stored_app, azurite)  # the fake keeps it InProgress
    ledger = ledger_of(azurite)
    [record] = ledger.list_upgrades().items
    assert ledger.update_upgrade(replace(record, accepted_at=utc_now() - timedelta(hours=2))) is not None
    run_tracking_function(message)
    host.tracking.delete_message(message)
    # two hours in, with a poll interval of 1 s: the next check in 2,048 s (1 s doubled 11 times), not in 1 s
    assert "next check in 2048.0 s" in caplog.text
    time.sleep(2.5)
    assert host.tracking.get_queue_properties().approximate_message_count == 1
    assert list(host.tracking.peek_messages()) == []  # not visible yet
    [after] = ledger.list_upgrades().items
    assert after.checks == 1 and after.state == "running"


# -- MS-RequestId after a business answer -----------------------------------------------------------------------
def test_a_request_deferred_by_try_again_later_sends_its_next_ms_request_id(monkeypatch, stored_app, azurite):
    from shared.ids import OperationIds, request_id_for

    _deferring_runtime(monkeypatch, PRODUCT_UPGRADE_DEFER_SECONDS="1")
    partner_center = stored_app.partner_center
    partner_center.replay_refusals()  # Partner Center answers a known MS-RequestId as it did before
    partner_center.set_customer_error(
        CUSTOMER_ID, 403, 900130, "Purchased recently; please try again later.", operations=("create",), times=1
    )
    host = Host(azurite.connection_string)
    message_id = host.send_request({"customerId": CUSTOMER_ID, "requestId": "crm-next"})
    host.run_until(lambda: len(host.results) >= 1, timeout=20)
    [result] = host.results
    assert (result["status"], result["messageId"]) == ("accepted", message_id)
    key = request_id_for("queue-request", "crm-next")
    sent = [r.header("MS-RequestId") for r in partner_center.requests_to("/v1/productupgrades", "POST")]
    assert sent == [key, OperationIds(key, "", business_answers=1).partner_center_request_id]
    assert host.deliveries["requests"] == 2
