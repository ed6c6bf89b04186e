"""A campaign's summary at size (``python -m benchmarks.campaign N ROUNDS``), in an app process of its own.

1. N upgrades of one campaign are recorded through the ledger, 16 at a time (as queue workers do): accepted,
   then 70 % of them ended (completed, failed, expired; 1 to 600 minutes after acceptance) and marked sent, as
   the tracker does; every state change counted in the campaign's counts by the ledger itself.
2. It prints ``ready`` and waits for ``go`` on stdin (the parent resets the storage proxy's counts there), then
   makes ROUNDS summaries as the route does (the kept counts, then the summary document) through the proxy.
3. It prints ``measured`` and waits for ``go`` again (the parent reads the proxy's counts: the summaries'
   requests), then, straight to Azurite (the proxy's own hop would dwarf what is measured), runs ROUNDS
   interleaved rounds of the summary and of its floor, the same one query made with a bare SDK TableClient;
   and last scans every record of the campaign once and compares the counts with the scan's.

The last line on stdout is one JSON document with the figures.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

CAMPAIGN = "bench-wave-1"
ENDED_SHARE = 0.7
ENDS = ("completed", "failed", "expired")


def populate(ledger: Any, n: int) -> dict[str, Any]:
    from shared.models import Campaign, ProductUpgradeCreated
    from shared.store.records import utc_now

    campaign = Campaign(CAMPAIGN, CAMPAIGN)
    rng = random.Random(20)
    plan = [(rng.random() < ENDED_SHARE, ENDS[i % 3], rng.uniform(1, 600)) for i in range(n)]

    def one(i: int) -> None:
        created = ProductUpgradeCreated(str(uuid.uuid4()), str(uuid.uuid4()), "Azure")
        record = ledger.record_accepted(
            str(uuid.uuid4()), created, caller_request_id=None, correlation_id="bench", campaign=campaign
        )
        assert record is not None, "storage refused a record"
        ends, state, minutes = plan[i]
        if ends:
            ended_at = record.accepted_at + timedelta(minutes=minutes)
            ended = ledger.update_upgrade(replace(record, state=state, ended_at=ended_at, updated_at=utc_now()))
            assert ended is not None
            assert ledger.update_upgrade(replace(ended, outcome_sent=True)) is not None

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    return {"seconds": time.monotonic() - started, "ended": sum(1 for ends, _, _ in plan if ends)}


def counted_summaries(ledger: Any, n_rounds: int) -> None:
    """ROUNDS summaries as the route makes them, through the counting proxy (the parent counts the requests)."""
    from shared.store.records import utc_now
    from shared.upgrades.campaigns import summary

    ledger.campaign_counts(CAMPAIGN)  # the process's first call makes sure the table exists: not a summary's cost
    wait_for_go("ready")
    for _ in range(n_rounds):
        counts = ledger.campaign_counts(CAMPAIGN)
        assert counts is not None
        summary(counts, utc_now())


def timed_rounds(ledger: Any, table_name: str, n_rounds: int) -> dict[str, Any]:
    """Interleaved rounds, both straight to Azurite: the summary as the route makes it, and the same one query
    made with a bare SDK TableClient (the floor)."""
    from azure.data.tables import TableServiceClient

    from shared.store import campaign_counts
    from shared.store.records import utc_now
    from shared.upgrades.campaigns import summary

    bare = TableServiceClient.from_connection_string(os.environ["BENCH_FLOOR_STORAGE"]).get_table_client(table_name)
    last: dict[str, Any] = {}

    def ours() -> None:
        counts = ledger.campaign_counts(CAMPAIGN)
        assert counts is not None
        last.update(summary(counts, utc_now()))

    def floor() -> None:
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high"
        bounds = {"pk": campaign_counts.partition_of(CAMPAIGN), "low": "counts|", "high": "counts}"}
        assert list(bare.query_entities(query, parameters=bounds))

    ours()  # connections opened, the table checked: first calls are not what is measured
    floor()
    timings: dict[str, list[float]] = {"summary": [], "floor": []}
    for _ in range(n_rounds):
        for name, call in (("summary", ours), ("floor", floor)):
            started = time.perf_counter()
            call()
            timings[name].append((time.perf_counter() - started) * 1000)
    ratios = [a / b for a, b in zip(timings["summary"], timings["floor"], strict=True)]
    return {
        "summary_ms": _spread(timings["summary"]),
        "floor_ms": _spread(timings["floor"]),
        "summary_vs_floor": _spread(ratios),
        "last_summary": last,
    }


def scan(ledger: Any) -> dict[str, Any]:
    from shared.upgrades.campaigns import scanned_counts

    started = time.monotonic()
    records, token = [], None
    while True:
        page = ledger.list_upgrades(campaign_key=CAMPAIGN, top=1000, continuation_token=token)
        records += page.items
        token = page.continuation_token
        if token is None:
            break
    scanned = scanned_counts(records)
    scan_ms = (time.monotonic() - started) * 1000
    kept = ledger.campaign_counts(CAMPAIGN)
    assert scanned is not None and kept is not None
    kept, scanned = replace(kept, campaign=""), replace(scanned, campaign="")
    return {
        "records_scanned": len(records),
        "full_scan_ms": scan_ms,
        "kept_counts": kept.counts,
        "scanned_counts": scanned.counts,
        "counts_equal_scan": kept == scanned,
        "state_mismatches": sum(abs(kept.counts[s] - scanned.counts[s]) for s in kept.counts),
        "histogram_equal_scan": kept.minutes_to_end == scanned.minutes_to_end,
        "times_equal_scan": (kept.first_accepted_at, kept.last_accepted_at, kept.last_ended_at)
        == (scanned.first_accepted_at, scanned.last_accepted_at, scanned.last_ended_at),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def wait_for_go(signal: str) -> None:
    print(signal, flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def main() -> None:
    from benchmarks.app import host_logging
    from shared.settings import Settings, StorageConnection
    from shared.store.table_ledger import TableLedger

    n, n_rounds = int(sys.argv[1]), int(sys.argv[2])
    host_logging()
    settings = Settings.from_env()
    assert settings.storage is not None
    ledger = TableLedger(settings.storage, settings.table_name)
    figures: dict[str, Any] = {"upgrades": n, "populate": populate(ledger, n)}
    counted_summaries(ledger, n_rounds)
    wait_for_go("measured")
    direct = TableLedger(StorageConnection(connection_string=os.environ["BENCH_FLOOR_STORAGE"]), settings.table_name)
    figures.update(timed_rounds(direct, settings.table_name, n_rounds))
    figures.update(scan(direct))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
