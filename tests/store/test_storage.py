"""What the ledger and the scheduler share: per-call deadlines for storage, queues and a table made by others."""

import contextlib
import json
import os

import pytest

from sandbox import CUSTOMER_ID
from shared.retry import time_budget
from shared.settings import StorageConnection
from shared.store.storage import ANSWER_MARGIN_SECONDS, ATTEMPTS, call_limits, full_wait_limits
from shared.store.table_ledger import TableLedger
from tests.harness import Host


def test_the_answer_is_awaited_past_storages_own_deadline():
    limits = call_limits(10)
    assert limits["timeout"] == 10
    assert limits["read_timeout"] == 10 + ANSWER_MARGIN_SECONDS
    assert limits["connection_timeout"] <= limits["timeout"]


@pytest.mark.parametrize("budget", [120.0, 45.0, 20.0])
def test_every_attempt_fits_in_the_budget(budget):
    with time_budget(budget):
        limits = call_limits(10)
    assert limits["timeout"] < limits["read_timeout"]
    assert ATTEMPTS * limits["read_timeout"] <= budget


def test_a_budget_nearly_spent_still_gives_storage_a_second():
    with time_budget(2.0):
        limits = call_limits(10)
    assert limits["timeout"] == 1 and limits["read_timeout"] == 1 + ANSWER_MARGIN_SECONDS


@pytest.mark.parametrize(("budget", "attempts"), [(None, ATTEMPTS), (120.0, ATTEMPTS), (70.0, 2), (40.0, 1)])
def test_a_write_that_must_not_be_doubled_waits_storages_whole_deadline_on_fewer_attempts(budget, attempts):
    with time_budget(budget) if budget is not None else contextlib.nullcontext():
        limits = full_wait_limits(20, connect=3.0, retry_pause=6.0)
    assert limits is not None
    assert (limits["timeout"], limits["read_timeout"]) == (20, 20 + ANSWER_MARGIN_SECONDS)
    assert limits["retry_total"] == attempts - 1
    if budget is not None:  # every attempt and the pauses between them end inside the budget
        assert attempts * (3.0 + limits["read_timeout"]) + (attempts - 1) * 6.0 <= budget


def test_a_write_that_must_not_be_doubled_is_not_started_without_time_for_storages_answer():
    with time_budget(27.0):
        assert full_wait_limits(20, connect=3.0) is None


def test_queues_and_table_the_app_may_not_create_are_taken_as_provisioned(stored_app, azurite, storage_proxy):
    # In Azure, Bicep creates them and the app holds data roles only: creating one is answered 403.
    host = Host(azurite.connection_string)  # the queues, as Bicep would have made them
    ledger = TableLedger(
        StorageConnection(connection_string=azurite.connection_string), os.environ["PRODUCT_UPGRADE_TABLE"]
    )
    ledger.list_upgrades()  # and the table
    queue_create = storage_proxy.forbid("queue", "PUT", f"/{os.environ['PRODUCT_UPGRADE_TRACKING_QUEUE']}")
    table_create = storage_proxy.forbid("table", "POST", "/Tables")

    response = stored_app.create({"customerId": CUSTOMER_ID})

    assert response.status_code == 202 and (queue_create.hits, table_create.hits) == (1, 1)
    [record] = ledger.list_upgrades().items
    assert record.upgrade_id == json.loads(response.get_body())["upgradeId"]
    assert host.tracking.get_queue_properties().approximate_message_count == 1  # its first status check
