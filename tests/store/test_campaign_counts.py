"""Counts kept per campaign beside the ledger (Azurite, real azure-data-tables client, storage faults at the wire):
every state change counted exactly once, however the writes race or their answers go missing; a summary read is
one query; and the counts always equal what a full scan of the campaign's records gives."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest

from sandbox.storage_proxy import CountingStorageProxy
from shared.models import Campaign, ProductUpgradeCreated
from shared.settings import StorageConnection
from shared.store import campaign_counts
from shared.store.campaign_counts import CampaignCounts
from shared.store.records import UpgradeRecord, utc_now
from shared.store.table_ledger import TableLedger
from shared.upgrades.campaigns import scanned_counts

WAVE = Campaign("Wave-1", "wave-1")


@pytest.fixture
def proxy(azurite) -> Iterator[CountingStorageProxy]:
    with CountingStorageProxy(azurite) as proxy:
        yield proxy


def ledger_on(connection_string: str) -> TableLedger:
    return TableLedger(StorageConnection(connection_string=connection_string), f"t{uuid.uuid4().hex[:12]}")


def accept(ledger: TableLedger, n: int, campaign: Campaign | None = WAVE) -> UpgradeRecord:
    created = ProductUpgradeCreated(f"u-{n}", str(uuid.UUID(int=n + 1)), "Azure")
    record = ledger.record_accepted(f"req-{n}", created, caller_request_id=None, correlation_id="c", campaign=campaign)
    assert record is not None
    return record


def end(ledger: TableLedger, key: str, state: str, minutes: float) -> UpgradeRecord | None:
    """A tracking worker ending the upgrade: read, change, conditional write (None: another worker did first)."""
    current = ledger.get_upgrade(key)
    assert current is not None
    if current.ended:
        return None
    ended_at = current.accepted_at + timedelta(minutes=minutes)
    return ledger.update_upgrade(replace(current, state=state, ended_at=ended_at, updated_at=utc_now()))


def all_records(ledger: TableLedger, campaign_key: str) -> list[UpgradeRecord]:
    records, token = [], None
    while True:
        page = ledger.list_upgrades(campaign_key=campaign_key, top=1000, continuation_token=token)
        records += page.items
        token = page.continuation_token
        if token is None:
            return records


def assert_equal_to_a_scan(ledger: TableLedger, campaign_key: str) -> CampaignCounts:
    kept = ledger.campaign_counts(campaign_key)
    scanned = scanned_counts(all_records(ledger, campaign_key))
    assert kept is not None and scanned is not None
    assert replace(kept, campaign="") == replace(scanned, campaign="")
    return kept


def test_counts_equal_a_full_scan_after_racing_workers(azurite):
    ledger = ledger_on(azurite.connection_string)
    states = ["completed", "failed", "expired", "partial", "running"]
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(lambda n: accept(ledger, n), range(80)))
    assert ledger.campaign_counts("wave-1").counts["running"] == 80
    rng = random.Random(7)
    plan = [(record.ledger_key, states[n % 5], rng.uniform(0.5, 600)) for n, record in enumerate(records)]
    ended = [(key, state, minutes) for key, state, minutes in plan if state != "running"]
    winners: list[UpgradeRecord] = []
    lock = threading.Lock()

    def worker(item: tuple[str, str, float]) -> None:
        key, state, minutes = item
        written = end(ledger, key, state, minutes)
        if written is not None:
            with lock:
                winners.append(written)
            # As the tracker does next: the outcome sent, marked on the record it got back.
            assert ledger.update_upgrade(replace(written, outcome_sent=True)) is not None
        # A late duplicate count of the same change (the sweep, or another delivery) changes nothing.
        stored = ledger.get_upgrade(key)
        assert stored is not None
        campaign_counts.count(ledger._client(), stored.counted())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(worker, ended * 2))  # every end raced by two workers

    assert len(winners) == len(ended)  # of each pair one recorded the end, as the ETag rule says
    rows = ledger._client().query_entities(
        "PartitionKey eq @pk", parameters={"pk": campaign_counts.partition_of("wave-1")}
    )
    row_keys = {row["RowKey"] for row in rows}
    shards = {f"counts|{n}" for n in range(campaign_counts.SHARDS)}
    assert row_keys - shards == {f"counted|{record.ledger_key}" for record in records}  # nothing else written
    kept = assert_equal_to_a_scan(ledger, "wave-1")
    assert kept.counts == {"running": 16, "completed": 16, "partial": 16, "failed": 16, "expired": 16}
    assert kept.upgrades == 80 and sum(kept.minutes_to_end.values()) == 64
    assert all(not record.count_pending for record in all_records(ledger, "wave-1") if record.ended)


def test_a_count_whose_answer_was_lost_is_counted_once(proxy):
    ledger = ledger_on(proxy.connection_string)
    records = [accept(ledger, n) for n in range(3)]
    # The count's transaction is carried out, its answer never comes: the SDK sends it again, and it fails on its
    # own first copy. The row of the upgrade then says it is counted.
    fault = proxy.lose_answer("table", "POST", "$batch", times=2)
    for record in records[:2]:
        assert end(ledger, record.ledger_key, "completed", 30) is not None
    assert fault.hits == 2
    kept = assert_equal_to_a_scan(ledger, "wave-1")
    assert kept.counts["completed"] == 2 and kept.counts["running"] == 1


def test_a_count_storage_refused_is_finished_by_the_records_next_write(proxy):
    ledger = ledger_on(proxy.connection_string)
    record = accept(ledger, 1)
    proxy.forbid("table", "POST", "$batch", times=1)  # the count's transaction, not the record's write (a PUT)
    ended = end(ledger, record.ledger_key, "failed", 12)
    assert ended is not None and ended.count_pending  # written, not yet counted: the record says so
    assert ledger.campaign_counts("wave-1").counts == {
        "running": 1,
        "completed": 0,
        "partial": 0,
        "failed": 0,
        "expired": 0,
    }
    stored = ledger.get_upgrade(record.ledger_key)
    assert stored is not None and stored.count_pending
    marked = ledger.update_upgrade(replace(stored, outcome_sent=True))  # the tracker's next write
    assert marked is not None and not marked.count_pending
    assert_equal_to_a_scan(ledger, "wave-1")
    stored = ledger.get_upgrade(record.ledger_key)
    assert stored is not None and not stored.count_pending and stored.counted_state == "failed"


def test_a_count_left_pending_with_no_later_write_is_settled_by_the_sweep(proxy):
    ledger = ledger_on(proxy.connection_string)
    record = accept(ledger, 1)
    proxy.forbid("table", "POST", "$batch", times=1)
    ended = end(ledger, record.ledger_key, "completed", 5)
    assert ended is not None and ended.count_pending
    assert ledger.settle_counts(utc_now() - timedelta(days=1)) == 0  # changed too recently: its writer may finish
    assert ledger.settle_counts(utc_now() + timedelta(seconds=1)) == 1
    assert ledger.settle_counts(utc_now() + timedelta(seconds=1)) == 0  # settled once
    kept = assert_equal_to_a_scan(ledger, "wave-1")
    assert kept.counts["completed"] == 1 and kept.counts["running"] == 0


def test_counting_a_state_already_counted_writes_nothing(proxy):
    ledger = ledger_on(proxy.connection_string)
    record = accept(ledger, 1)
    proxy.reset()
    assert campaign_counts.count(ledger._client(), record.counted())
    assert dict(proxy.counts) == {("table", "GET"): 1}  # one query of the campaign's partition, no write


def test_a_summary_read_is_one_query_whatever_the_campaigns_size(proxy):
    ledger = ledger_on(proxy.connection_string)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: accept(ledger, n), range(40)))
    proxy.reset()
    counts = ledger.campaign_counts("WAVE-1".lower())
    assert counts is not None and counts.upgrades == 40
    assert dict(proxy.counts) == {("table", "GET"): 1}
    assert ledger.campaign_counts("wave-2") is None


def test_upgrades_without_a_campaign_cost_no_count(proxy):
    ledger = ledger_on(proxy.connection_string)
    accept(ledger, 0)  # creates the table
    proxy.reset()
    record = accept(ledger, 1, campaign=None)
    assert end(ledger, record.ledger_key, "completed", 3) is not None
    assert dict(proxy.counts) == {("table", "POST"): 1, ("table", "GET"): 1, ("table", "PUT"): 1}
    assert ledger.campaign_counts("wave-1").counts["running"] == 1


def test_the_histogram_is_bounded_and_its_buckets_five_percent_wide():
    assert campaign_counts.bucket_of(0.2) == 0 and campaign_counts.bucket_of(1) == 1
    for minutes in (1.0, 7.3, 59.9, 600.0, 10_080.0):
        low, high = campaign_counts.bucket_bounds(campaign_counts.bucket_of(minutes))
        assert low <= minutes < high and high / low == pytest.approx(1.05)
    assert campaign_counts.bucket_of(10_080) < campaign_counts.MAX_BUCKET
    assert campaign_counts.bucket_of(10**12) == campaign_counts.MAX_BUCKET
