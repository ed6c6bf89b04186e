"""The ledger: request and upgrade records in an Azure Table (Azurite, real azure-data-tables client)."""

import json
import logging
import os
import threading
import uuid
from dataclasses import replace

from azure.data.tables import TableServiceClient

from sandbox import CUSTOMER_ID
from sandbox.storage_proxy import CountingStorageProxy
from shared.models import ProductUpgradeCreated, ProductUpgradeRequest
from shared.settings import StorageConnection
from shared.store.table_ledger import TableLedger
from tests.harness import use_unreachable_storage

NO_IDS = {"caller_request_id": None, "correlation_id": "c"}


def _ledger(azurite) -> TableLedger:
    return TableLedger(StorageConnection(connection_string=azurite.connection_string), f"t{uuid.uuid4().hex[:12]}")


def test_round_trip_creates_the_table_on_first_use(azurite):
    ledger = _ledger(azurite)
    assert ledger.get_request("req-1") is None
    created = ProductUpgradeCreated("u-1", CUSTOMER_ID, "Azure")
    record = ledger.record_accepted("req-1", created, caller_request_id="crm-1", correlation_id="corr-1")
    assert record is not None and record.state == "running" and record.etag
    request = ledger.get_request("req-1")
    assert request is not None and request.status == "accepted" and request.upgrade_id == "u-1"
    assert request.caller_request_id == "crm-1" and request.correlation_id == "corr-1"
    stored = ledger.get_upgrade("req-1")
    assert stored is not None and stored.upgrade_id == "u-1" and stored.request_id == "crm-1"
    assert stored.to_json()["updatedAt"] == stored.to_json()["acceptedAt"]
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    entities = list(service.get_table_client(ledger._table_name).list_entities())
    assert sorted(e["RowKey"] for e in entities) == ["request", "upgrade"]
    assert {e["PartitionKey"] for e in entities} == {"req-1"}
    assert ledger.get_request("req-2") is None and ledger.get_upgrade("req-2") is None


def test_a_twin_finds_the_upgrade_recorded_and_leaves_it_to_the_first(azurite):
    ledger = _ledger(azurite)
    created = ProductUpgradeCreated("u-1", CUSTOMER_ID, "Azure")
    first = ledger.record_accepted("req-1", created, **NO_IDS)
    twin = ledger.record_accepted("req-1", created, **NO_IDS)
    assert first is not None and twin is None  # one follows the upgrade


def test_a_record_whose_answer_was_lost_is_written_again_and_known_as_its_own(azurite, caplog):
    # The SDK never resends a POST once sent: the ledger does, and the resend meets the row its first copy wrote.
    with CountingStorageProxy(azurite) as proxy:
        ledger = _ledger(proxy)
        lost = proxy.lose_answer("table", "POST", "$batch")
        record = ledger.record_accepted("req-1", ProductUpgradeCreated("u-1", CUSTOMER_ID, "Azure"), **NO_IDS)
        assert lost.hits == 1 and record is not None and record.etag
        assert "did not come; writing it again" in caplog.text
        assert ledger.update_upgrade(replace(record, state="completed")) is not None  # its ETag is the row's
        tries = proxy.requests_to("table", "POST", "$batch")
        assert [t.carried_out for t in tries] == [True, True]
        assert tries[0].client_request_id and tries[0].client_request_id == tries[1].client_request_id
        # no answer to any of its tries: not recorded, and said so
        lost = proxy.lose_answer("table", "POST", "$batch", times=3)
        assert ledger.record_accepted("req-2", ProductUpgradeCreated("u-2", CUSTOMER_ID, "Azure"), **NO_IDS) is None
        assert lost.hits == 3 and "Ledger could not record accepted upgrade (u-2)" in caplog.text


def test_replay_after_a_crash_does_not_post_again(stored_app):
    message = {"customerId": CUSTOMER_ID, "requestId": "crm-55"}
    first = json.loads(stored_app.queue(message, message_id="m-1", dequeue_count=1))
    # the host crashed before writing that result: the message comes back
    second = json.loads(stored_app.queue(message, message_id="m-1", dequeue_count=2))
    assert first["status"] == second["status"] == "accepted"
    assert first["upgradeId"] == second["upgradeId"]
    assert stored_app.partner_center.create_posts == 1


def test_http_replay_with_the_same_idempotency_key_does_not_post_again(stored_app):
    headers = {"Idempotency-Key": "order-77"}
    first = stored_app.create({"customerId": CUSTOMER_ID}, headers=headers)
    second = stored_app.create({"customerId": CUSTOMER_ID}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert json.loads(first.get_body()) == json.loads(second.get_body())
    assert stored_app.partner_center.create_posts == 1


def test_unreachable_storage_never_blocks_the_upgrade(monkeypatch, app_env, caplog):
    use_unreachable_storage(monkeypatch)
    with caplog.at_level(logging.WARNING):
        first = json.loads(app_env.queue({"customerId": CUSTOMER_ID}, message_id="m-1"))
        second = json.loads(app_env.queue({"customerId": "00000000-0000-0000-0000-0000000000d2"}, message_id="m-2"))
    assert first["status"] == second["status"] == "accepted"
    assert len(app_env.partner_center.created_upgrades) == 2
    # the record each upgrade's tracking needs is tried for every upgrade; nothing else is tried again while paused
    assert caplog.text.count("Ledger could not record accepted upgrade") == 2
    assert caplog.text.count("Ledger could not reserve request") == 1  # the second message's: paused, not tried
    assert caplog.text.count("Ledger paused after a storage failure: could not reserve request") == 1
    assert "a2V5" not in caplog.text


def test_reusing_an_idempotency_key_for_another_customer_is_422(stored_app):
    headers = {"Idempotency-Key": "order-88"}
    assert stored_app.create({"customerId": CUSTOMER_ID}, headers=headers).status_code == 202
    response = stored_app.create({"customerId": "00000000-0000-0000-0000-0000000000d2"}, headers=headers)
    assert response.status_code == 422
    problem = json.loads(response.get_body())
    assert problem["type"].endswith("idempotency_key_reused") and "Idempotency-Key" in problem["detail"]
    assert stored_app.partner_center.create_posts == 1


def test_reusing_a_request_id_on_the_queue_is_rejected(stored_app):
    stored_app.queue({"customerId": CUSTOMER_ID, "requestId": "row-1"}, message_id="a")
    result = json.loads(stored_app.queue({"customerId": "00000000-0000-0000-0000-0000000000d2", "requestId": "row-1"}))
    assert result["status"] == "rejected" and result["error"]["code"] == "idempotency_key_reused"


def test_storage_round_trips_per_create(stored_app, storage_proxy):
    stored_app.create({"customerId": "00000000-0000-0000-0000-00000000e000"})  # creates the table and queue
    storage_proxy.reset()
    assert stored_app.create({"customerId": "00000000-0000-0000-0000-00000000e001"}).status_code == 202
    # one entity-group transaction (request + upgrade records) and one scheduled status check; no read
    assert dict(storage_proxy.counts) == {("table", "POST"): 1, ("queue", "POST"): 1}
    storage_proxy.reset()
    headers = {"Idempotency-Key": "order-e002"}
    assert stored_app.create({"customerId": "00000000-0000-0000-0000-00000000e002"}, headers=headers).status_code
    # with a key: the insert-only reservation first
    assert dict(storage_proxy.counts) == {("table", "POST"): 2, ("queue", "POST"): 1}
    storage_proxy.reset()
    stored_app.create({"customerId": "00000000-0000-0000-0000-00000000e002"}, headers=headers)
    # a replay: the reservation meets the record and reads it; nothing else
    assert dict(storage_proxy.counts) == {("table", "POST"): 1, ("table", "GET"): 1}
    assert stored_app.partner_center.create_posts == 3


def test_concurrent_creates_with_one_key_for_two_customers_make_one_upgrade(stored_app):
    barrier = threading.Barrier(2)
    responses = {}

    def create(customer):
        barrier.wait()
        responses[customer] = stored_app.create({"customerId": customer}, headers={"Idempotency-Key": "race-1"})

    customers = [CUSTOMER_ID, "00000000-0000-0000-0000-0000000000d2"]
    threads = [threading.Thread(target=create, args=(c,)) for c in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.status_code for r in responses.values()) == [202, 422]
    assert len(stored_app.partner_center.created_upgrades) == 1


def test_a_reservation_left_by_a_crash_does_not_block_a_retry(stored_app, azurite):
    from shared.ids import request_id_for
    from shared.models import ProductUpgradeRequest

    ledger = TableLedger(
        StorageConnection(connection_string=azurite.connection_string), os.environ["PRODUCT_UPGRADE_TABLE"]
    )
    request_id = request_id_for("idempotency-key", "crashed-1")
    # a worker reserved the request id, then died before Partner Center answered
    assert ledger.reserve(request_id, ProductUpgradeRequest(CUSTOMER_ID), "c-1") is None
    response = stored_app.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "crashed-1"})
    assert response.status_code == 202
    record = ledger.get_request(request_id)
    assert record is not None and record.status == "accepted"


def test_a_refused_request_is_recorded_and_does_not_block_a_retry(stored_app, azurite):
    from shared.ids import request_id_for

    ledger = TableLedger(
        StorageConnection(connection_string=azurite.connection_string), os.environ["PRODUCT_UPGRADE_TABLE"]
    )
    stored_app.partner_center.set_customer_error(CUSTOMER_ID, 403, 900108, "No Azure subscriptions to upgrade.")
    headers = {"Idempotency-Key": "refused-1"}
    assert stored_app.create({"customerId": CUSTOMER_ID}, headers=headers).status_code == 422
    record = ledger.get_request(request_id_for("idempotency-key", "refused-1"))
    assert record is not None and record.status == "rejected" and record.partner_center_error_code == "900108"
    assert record.error_code == "not_eligible" and "No Azure subscriptions" in (record.error_message or "")
    stored_app.partner_center.clear_customer_error(CUSTOMER_ID)
    assert stored_app.create({"customerId": CUSTOMER_ID}, headers=headers).status_code == 202


def test_http_and_queue_keys_are_apart_for_guid_keys_too(stored_app):
    key = "7d0f2d0e-3f4b-4c59-9a57-2b8f1d2e3c4a"
    assert stored_app.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": key}).status_code == 202
    result = json.loads(stored_app.queue({"customerId": "00000000-0000-0000-0000-0000000000d2", "requestId": key}))
    assert result["status"] == "accepted"
    sent = [r.header("MS-RequestId") for r in stored_app.partner_center.requests_to("/v1/productupgrades", "POST")]
    assert len(set(sent)) == 2 and key not in sent


def test_a_storage_failure_pauses_the_ledger_but_never_the_record_tracking_needs(storage_proxy, caplog):
    # One refused reservation paused every write for a minute: the upgrades accepted meanwhile had no record, so no
    # status check followed them and their outcomes were never sent (seen in a busy-machine run of 1,000).
    ledger = TableLedger(StorageConnection(connection_string=storage_proxy.connection_string), "pausedledger")
    request = ProductUpgradeRequest(CUSTOMER_ID)
    assert ledger.reserve("req-0", request, "corr-0") is None  # creates the table: the next POST is the reservation
    storage_proxy.forbid("table", "POST", "/pausedledger", times=1)
    with caplog.at_level(logging.WARNING):
        assert ledger.reserve("req-1", request, "corr-1") is None
        assert ledger.get_request("req-2") is None  # paused: not asked
        record = ledger.record_accepted(
            "req-1", ProductUpgradeCreated("u-1", CUSTOMER_ID, "Azure"), caller_request_id=None, correlation_id="corr-1"
        )
    assert "Ledger could not reserve request (req-1): HttpResponseError" in caplog.text
    assert "Ledger paused after a storage failure: could not read the request record (req-2)" in caplog.text
    assert record is not None and record.upgrade_id == "u-1" and record.state == "running"
    stored = ledger.get_upgrade("req-1")
    assert stored is not None and stored.upgrade_id == "u-1"
