"""Outcome messages a consumer can count: at least once, every copy identical, each possible copy reported.

An Azure queue has no send-once: when storage carries a send out and its answer is lost or comes too late, the
SDK sends it again and both copies land. These tests make that happen at the wire (the counting proxy in front
of Azurite carries the POST out, then loses or holds back its answer) and hold the app to what it promises: two
byte-identical copies with one ``outcomeId``, a single send by the app (the first try of each send carries the
``outcomeId`` as its client request id; the SDK's retries do not), one warning naming the id, the ledger row
flagged. And it never makes the copy itself by waiting less than storage may take.
"""

import json
import logging
import os
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from sandbox import CUSTOMER_ID
from shared.ids import outcome_id_for, request_id_for
from shared.retry import time_budget
from shared.settings import StorageConnection
from shared.store.records import UpgradeRecord, utc_now
from shared.store.scheduler import QUEUE_DEADLINE_SECONDS
from shared.store.storage import ANSWER_MARGIN_SECONDS
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime
from shared.upgrades.outcomes import OUTCOME_LEASE_SECONDS
from tests.harness import Host, run_tracking_function

#: The read timeout of an outcome send: storage's deadline and the margin past it.
OUTCOME_READ_TIMEOUT = QUEUE_DEADLINE_SECONDS + ANSWER_MARGIN_SECONDS
RESEND_WARNING = "may arrive twice"


def outcomes_path() -> str:
    return f"/{os.environ['PRODUCT_UPGRADE_OUTCOMES_QUEUE']}/messages"


def ledger_of(azurite) -> TableLedger:
    return TableLedger(
        StorageConnection(connection_string=azurite.connection_string), runtime.get_runtime().settings.table_name
    )


def the_record(azurite) -> UpgradeRecord:
    [record] = ledger_of(azurite).list_upgrades().items
    return record


def warnings_naming(caplog, outcome_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and outcome_id in r.getMessage()]


def one_check(stored_app, azurite):
    """An upgrade Partner Center reports Completed at its first check; the host, its id and that check's message
    (taken off the tracking queue, as a racing host would)."""
    stored_app.partner_center.complete_after_polls(0)
    host = Host(azurite.connection_string)
    upgrade_id = json.loads(stored_app.create({"customerId": CUSTOMER_ID}).get_body())["upgradeId"]
    messages = []
    while not messages:
        messages = list(host.tracking.receive_messages(max_messages=1, visibility_timeout=600))
    return host, upgrade_id, messages[0]


def collect(host: Host, copies: int, timeout: float) -> list[str]:
    """Run the host until ``copies`` outcome messages have come, then twice more (nothing more may come)."""
    host.run_until(lambda: len(host.outcome_texts) >= copies, timeout=timeout)
    for _ in range(2):
        host.run_once()
    return host.outcome_texts


def test_the_outcome_id_is_a_name_based_uuid_of_the_upgrade_id():
    upgrade_id = "5b1d5c52-8e3b-4f7e-a0c1-2f1d6c9f3b10"
    outcome_id = outcome_id_for(upgrade_id)
    assert uuid.UUID(outcome_id).version == 5
    assert outcome_id == outcome_id_for(upgrade_id.upper()) == outcome_id_for(f" {upgrade_id} ")
    assert outcome_id != outcome_id_for("5b1d5c52-8e3b-4f7e-a0c1-2f1d6c9f3b11")
    assert outcome_id not in {request_id_for(kind, upgrade_id) for kind in ("idempotency-key", "queue-request")}


def assert_sent_twice_by_the_sdk_once_by_the_app(host, storage_proxy, azurite, caplog, upgrade_id):
    outcome_id = outcome_id_for(upgrade_id)
    first, second = collect(host, 2, timeout=OUTCOME_READ_TIMEOUT + 30)
    assert first == second  # byte for byte
    assert json.loads(first)["outcomeId"] == outcome_id and json.loads(first)["upgradeId"] == upgrade_id
    by_outcome_id = {json.loads(text)["outcomeId"]: text for text in host.outcome_texts}
    assert len(by_outcome_id) == 1  # a consumer keyed on outcomeId sees one outcome
    sends = storage_proxy.requests_to("queue", "POST", outcomes_path())
    assert len(sends) == 2 and all(send.carried_out for send in sends)
    # the app's send is the one try carrying the outcomeId; the other is the SDK's retry
    assert [send.client_request_id for send in sends].count(outcome_id) == 1
    [warning] = warnings_naming(caplog, outcome_id)
    assert RESEND_WARNING in warning and upgrade_id in warning
    record = the_record(azurite)
    assert record.outcome_sent and record.outcome_resent and record.outcome_id == outcome_id


def test_an_outcome_whose_answer_is_lost_arrives_twice_identical_and_reported(
    stored_app, azurite, storage_proxy, caplog
):
    host, upgrade_id, message = one_check(stored_app, azurite)
    lost = storage_proxy.lose_answer("queue", "POST", outcomes_path())
    run_tracking_function(message)
    assert lost.hits == 1
    assert_sent_twice_by_the_sdk_once_by_the_app(host, storage_proxy, azurite, caplog, upgrade_id)


@pytest.mark.slow
def test_an_outcome_answered_past_the_read_timeout_arrives_twice_identical_and_reported(
    stored_app, azurite, storage_proxy, caplog
):
    host, upgrade_id, message = one_check(stored_app, azurite)
    late = storage_proxy.answer_late("queue", "POST", outcomes_path(), OUTCOME_READ_TIMEOUT + 2.0)
    run_tracking_function(message)
    assert late.hits == 1
    assert_sent_twice_by_the_sdk_once_by_the_app(host, storage_proxy, azurite, caplog, upgrade_id)


def test_late_in_its_budget_an_outcome_send_still_waits_for_storages_whole_answer(
    stored_app, azurite, storage_proxy, caplog
):
    # 32 s left: three attempts cut to fit would wait 10 s each (and a 12 s answer would make a copy); one attempt
    # that waits storage's whole deadline fits.
    host, upgrade_id, message = one_check(stored_app, azurite)
    late = storage_proxy.answer_late("queue", "POST", outcomes_path(), 12.0)
    with time_budget(32):
        run_tracking_function(message)
    assert late.hits == 1
    assert collect(host, 1, timeout=30) == [host.outcome_texts[0]]
    assert len(storage_proxy.requests_to("queue", "POST", outcomes_path())) == 1
    assert warnings_naming(caplog, outcome_id_for(upgrade_id)) == []
    record = the_record(azurite)
    assert record.outcome_sent and not record.outcome_resent


def test_with_too_little_time_left_the_outcome_is_left_to_its_lapsed_claim_and_sent_once(
    stored_app, azurite, storage_proxy, caplog
):
    host, upgrade_id, message = one_check(stored_app, azurite)
    with time_budget(20):  # less than one attempt that waits storage's whole deadline
        run_tracking_function(message)
    assert storage_proxy.requests_to("queue", "POST", outcomes_path()) == []  # not started, so no race
    record = the_record(azurite)
    assert record.state == "completed" and not record.outcome_sent and record.outcome_claimed_at is None
    # the check that sends it is on the tracking queue, out of sight until the claim would have lapsed
    assert host.tracking.get_queue_properties().approximate_message_count == 2  # in flight + the later one
    assert list(host.tracking.peek_messages()) == []
    # ... five minutes later
    ledger_of(azurite).update_upgrade(replace(record, ended_at=utc_now() - timedelta(seconds=OUTCOME_LEASE_SECONDS)))
    run_tracking_function(message)
    assert collect(host, 1, timeout=30) == [host.outcome_texts[0]]
    outcome_id = outcome_id_for(upgrade_id)
    assert [w for w in warnings_naming(caplog, outcome_id) if RESEND_WARNING in w] == []  # nothing was sent before
    record = the_record(azurite)
    assert record.outcome_sent and not record.outcome_resent and record.outcome_id == outcome_id


def test_the_lease_paths_copy_is_identical_to_the_first_and_reported(stored_app, azurite, caplog):
    host, upgrade_id, message = one_check(stored_app, azurite)
    run_tracking_function(message)
    [first] = collect(host, 1, timeout=30)
    # as if the worker had died after the send, before marking it sent
    ledger = ledger_of(azurite)
    claimed_at = utc_now() - timedelta(seconds=OUTCOME_LEASE_SECONDS + 60)
    ledger.update_upgrade(replace(the_record(azurite), outcome_sent=False, outcome_claimed_at=claimed_at))
    run_tracking_function(message)
    assert collect(host, 2, timeout=30) == [first, first]
    outcome_id = outcome_id_for(upgrade_id)
    [warning] = warnings_naming(caplog, outcome_id)
    assert RESEND_WARNING in warning
    record = the_record(azurite)
    assert record.outcome_sent and record.outcome_resent and record.outcome_id == outcome_id


def test_an_outcome_sent_once_is_recorded_with_its_id_and_not_flagged(stored_app, azurite, storage_proxy):
    host, upgrade_id, message = one_check(stored_app, azurite)
    run_tracking_function(message)
    [text] = collect(host, 1, timeout=30)
    assert json.loads(text)["outcomeId"] == outcome_id_for(upgrade_id)
    [send] = storage_proxy.requests_to("queue", "POST", outcomes_path())
    assert send.client_request_id == outcome_id_for(upgrade_id)
    record = the_record(azurite)
    assert record.outcome_sent and not record.outcome_resent and record.outcome_id == outcome_id_for(upgrade_id)
