"""The shared pace of Partner Center calls in the ledger's table (Azurite): ETag discipline, demands of busy
instances, housekeeping, two runtimes sharing one rate, its cost in storage requests, and storage down."""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.data.tables import TableServiceClient

from shared.errors import StorageUnavailableError
from shared.models import ProductUpgradeRequest
from shared.partner_center.pace_rules import Pace, PaceRules
from shared.settings import Settings, StorageConnection
from shared.store.pace_state import FORGET_AFTER_SECONDS, PARTITION, PARTNER_ROW, TablePaceState
from shared.upgrades import runtime
from tests.harness import FAST_POLICY, UNREACHABLE_STORAGE, use_unreachable_storage


def state_on(connection_string, table, wall=time.time):
    return TablePaceState(StorageConnection(connection_string=connection_string), table, wall=wall)


def test_exchange_records_demand_and_reads_the_partner_s_record(azurite):
    table = f"pace{uuid.uuid4().hex[:10]}"
    state = state_on(azurite.connection_string, table)
    first = state.exchange("one", 4.0, active_within=3.0)  # creates the table
    assert first.record is None and first.etag is None and first.demands == {"one": 4.0}
    pace = PaceRules().start(time.time())
    etag = state.replace(pace.to_record(), None)
    assert etag
    second = state.exchange("two", 2.0, active_within=3.0)
    assert Pace.from_record(second.record) == pace and second.etag == etag
    assert second.demands == {"one": 4.0, "two": 2.0}


def test_the_partner_s_record_changes_only_under_its_etag(azurite):
    state = state_on(azurite.connection_string, f"pace{uuid.uuid4().hex[:10]}")
    pace = PaceRules().start(time.time())
    etag = state.replace(pace.to_record(), None)
    assert state.replace(pace.to_record(), None) is None  # a second insert: another instance was first
    faster = Pace(rate=20.0, base=20.0, slow_start=True, changed_at=pace.changed_at + 1)
    newer = state.replace(faster.to_record(), etag)
    assert newer and newer != etag
    assert state.replace(pace.to_record(), etag) is None  # a stale ETag: the change is refused
    assert Pace.from_record(state.exchange("one", 1.0, active_within=3.0).record) == faster


def test_instances_not_seen_lately_do_not_count_and_long_gone_ones_are_deleted(azurite):
    table = f"pace{uuid.uuid4().hex[:10]}"
    now = [1_800_000_000.0]
    state = state_on(azurite.connection_string, table, wall=lambda: now[0])
    state.exchange("gone", 8.0, active_within=3.0)
    now[0] += 10.0
    state.exchange("idle", 8.0, active_within=3.0)
    now[0] += 5.0
    assert state.exchange("busy", 1.0, active_within=3.0).demands == {"busy": 1.0}
    now[0] += FORGET_AFTER_SECONDS
    state.exchange("busy", 1.0, active_within=3.0)
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    rows = {e["RowKey"] for e in service.get_table_client(table).query_entities(f"PartitionKey eq '{PARTITION}'")}
    assert rows == {"instance-busy"}


def test_the_ledger_never_sees_the_pace_rows(stored_app):
    stored_app.create({"customerId": "00000000-0000-0000-0000-00000000e101"})
    pace = runtime.get_runtime().pace
    pace.sync_now()
    service = TableServiceClient.from_connection_string(runtime.get_runtime().settings.storage.connection_string)
    table = service.get_table_client(runtime.get_runtime().settings.table_name)
    assert list(table.query_entities(f"PartitionKey eq '{PARTITION}' and RowKey eq '{PARTNER_ROW}'"))
    listed = stored_app.http("list_product_upgrades", "GET", "/api/productupgrades")
    assert listed.status_code == 200
    assert [item["customerId"] for item in __import__("json").loads(listed.get_body())["items"]] == [
        "00000000-0000-0000-0000-00000000e101"
    ]


def test_storage_down_is_storage_unavailable():
    state = state_on(UNREACHABLE_STORAGE, "paceunreachable")
    with pytest.raises(StorageUnavailableError):
        state.exchange("one", 1.0, active_within=3.0)


# -- two runtimes: two instances of the app -------------------------------------------------------------------


def creates(rt, n, threads=4):
    def one(_):
        request = ProductUpgradeRequest(str(uuid.uuid4()), "Azure")
        return rt.client.create_upgrade(request, request_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def test_two_instances_take_shares_of_one_partner_rate(stored_app):
    stored_app.partner_center.admit_per_second(16)
    settings = Settings.from_env()
    first = runtime.Runtime.build(settings, policy=FAST_POLICY)
    second = runtime.Runtime.build(settings, policy=FAST_POLICY)
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda rt: creates(rt, 60), (first, second)))
    assert sum(len(d) for d in done) == 120 == len(stored_app.partner_center.created_upgrades)
    a, b = first.pace.figures(), second.pace.figures()
    assert a["syncs"] >= 2 and b["syncs"] >= 2 and not a["alone"] and not b["alone"]
    assert 0.2 < a["share"] < 0.8 and 0.2 < b["share"] < 0.8
    # Together they keep to the partner's one rate (each at its share of it), not twice it.
    assert a["partner_rate"] == pytest.approx(b["partner_rate"], rel=0.5)
    assert a["rate"] + b["rate"] == pytest.approx(a["partner_rate"], rel=0.5)


def test_the_shared_pace_costs_an_exchange_a_second_per_busy_instance(stored_app, storage_proxy):
    stored_app.partner_center.admit_per_second(20)
    rt = runtime.get_runtime()
    creates(rt, 4)  # the table, the first exchange
    # Creates through the client alone: the ledger makes no request, every table request is the pace's.
    storage_proxy.reset()
    before = rt.pace.figures()
    started = time.monotonic()
    while time.monotonic() - started < 4.0:
        creates(rt, 8)
    seconds = time.monotonic() - started
    after = rt.pace.figures()
    table_requests = sum(n for (service, _), n in storage_proxy.counts.items() if service == "table")
    assert table_requests == after["storage_requests"] - before["storage_requests"]  # the count is the wire's
    exchanges = after["syncs"] - before["syncs"]
    assert exchanges <= seconds + 1  # reads: at most one a second
    # Each exchange: an upsert and a query, and a write of the partner's record when its rate grew; each cut
    # one write more (and, when another instance wrote first, a second exchange).
    assert table_requests <= 3 * exchanges + 3 * (after["cuts"] - before["cuts"])


def test_storage_down_never_stops_upgrading(monkeypatch, app_env, azurite):
    use_unreachable_storage(monkeypatch)
    rt = runtime.get_runtime()
    assert len(creates(rt, 6, threads=2)) == 6
    deadline = time.monotonic() + 10
    while rt.pace.figures()["failures"] == 0 and time.monotonic() < deadline:
        creates(rt, 1)
        time.sleep(0.1)
    figures = rt.pace.figures()
    assert figures["failures"] >= 1 and figures["alone"] is True
    assert len(creates(rt, 4, threads=2)) == 4


def test_the_ceiling_setting_bounds_the_pace_of_every_instance(monkeypatch, stored_app):
    monkeypatch.setenv("PRODUCT_UPGRADE_MAX_CALLS_PER_MINUTE", "120")
    rt = runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY)
    assert rt.pace.rules.maximum == 2.0 and rt.pace.rate <= 2.0
