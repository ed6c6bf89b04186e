"""Tracking messages are the app's own, but they travel through a queue others may write: the parser takes only
what the app writes (bounded counts, a ledger key of the ledger's form), so no message can burn the worker or
be rescheduled for ever."""

import json
import uuid

import pytest
from azure.functions.queue import QueueMessage

from sandbox import CUSTOMER_ID
from shared.errors import ValidationError
from shared.functions import tracking_worker
from shared.upgrades.checks import MAX_CHECKS, MAX_FAILURES, TrackingCheck

LEDGER_KEY = str(uuid.uuid4())


def message(**changes):
    body = {
        "upgradeId": str(uuid.uuid4()),
        "customerId": CUSTOMER_ID,
        "productFamily": "Azure",
        "ledgerKey": LEDGER_KEY,
        "check": 3,
        "failures": 1,
    }
    return {**body, **changes}


def test_the_checks_the_app_writes_round_trip():
    check = TrackingCheck(str(uuid.uuid4()), CUSTOMER_ID, "Azure", LEDGER_KEY, check=MAX_CHECKS, failures=MAX_FAILURES)
    assert TrackingCheck.from_json(json.loads(json.dumps(check.to_json()))) == check


@pytest.mark.parametrize(
    "changes",
    [
        {"failures": 10**18},
        {"failures": MAX_FAILURES + 1},
        {"check": 10**18},
        {"check": MAX_CHECKS + 1},
        {"check": True},
        {"ledgerKey": "req-1"},
        {"ledgerKey": "a/b"},
        {"ledgerKey": "x\nERROR forged"},
        {"ledgerKey": "00000000-0000-0000-0000-00000000000g"},
    ],
)
def test_counts_beyond_bounds_and_ledger_keys_not_of_the_ledgers_form_are_refused(changes):
    with pytest.raises(ValidationError):
        TrackingCheck.from_json(message(**changes))


def test_a_check_failing_again_and_again_stays_within_the_bound():
    check = TrackingCheck(str(uuid.uuid4()), CUSTOMER_ID, "Azure", LEDGER_KEY, failures=MAX_FAILURES - 1)
    once, twice = check.failed_again(), check.failed_again().failed_again()
    assert once.failures == twice.failures == MAX_FAILURES
    assert TrackingCheck.from_json(twice.to_json()) == twice


def test_the_worker_drops_a_message_with_a_huge_failure_count_at_once(caplog):
    raw = json.dumps(message(failures=10**18)).encode()
    # Before the bound, 2 ** failures for the backoff ran until the worker died; now it is refused when parsed.
    tracking_worker.handle(QueueMessage(id="t-1", body=raw, dequeue_count=1, pop_receipt="pr"))
    assert any("Dropping a malformed tracking message" in r.getMessage() for r in caplog.records)
