"""The ledger: request and upgrade records in an Azure Table (Azurite, real azure-data-tables client)."""

import json
import logging
import uuid

from azure.data.tables import TableServiceClient

from shared import runtime
from shared.ledger import TableLedger
from shared.models import ProductUpgradeCreated
from shared.settings import Settings, StorageConnection
from tests.fakes import CUSTOMER_ID
from tests.harness import FAST_POLICY


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
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY))
    with caplog.at_level(logging.WARNING):
        first = json.loads(app_env.queue({"customerId": CUSTOMER_ID}, message_id="m-1"))
        second = json.loads(app_env.queue({"customerId": "00000000-0000-0000-0000-0000000000d2"}, message_id="m-2"))
    assert first["status"] == second["status"] == "accepted"
    assert len(app_env.partner_center.created_upgrades) == 2
    assert caplog.text.count("Ledger could not") == 1  # then paused, not retried per message
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
