"""The "Run a campaign" walk of docs/campaigns.md, from the CSV on, against the loopback sandbox and Azurite, with
1,000 customers: ``bulk --enqueue --campaign wave-1 --wait`` (the real command line, a child process) while the
functions host's loop (tests/harness.py) runs the queue and tracking functions, and the summary route watched as
the wave runs.

Checked: every eligible customer upgraded exactly once; the summary route's counts equal the ledger's records,
exactly, at the end; ``estimatedEndAt`` set while upgrades ran and ended; ``running`` ends at 0; every outcome
message carries ``campaign: "wave-1"``; a hand-edited row that is broken is rejected and the rest go on; the
refusals (not eligible, already upgraded, try later) are recorded under the campaign.

(Discovery, the walk's first step, is another branch's; this test starts from the CSV it writes.)
Smaller: ``CAMPAIGN_WALK_CUSTOMERS=100 scripts/check test tests/test_campaign_walk.py -s``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import Counter
from typing import Any

from shared.settings import Settings, StorageConnection
from shared.store.ledger import TableLedger
from shared.upgrades import runtime
from shared.upgrades.campaigns import scanned_counts
from tests.cli.helpers import Cli, created_per_customer, read_report, write_csv
from tests.harness import FAST_POLICY, Host

CUSTOMERS = int(os.environ.get("CAMPAIGN_WALK_CUSTOMERS", "1000"))
TIME_LIMIT = 1200  # one process plays the host, the app and Partner Center; the CLI is another: CPU-bound


def summary(app: Any, name: str) -> tuple[int, dict[str, Any]]:
    response = app.http("get_campaign_summary", "GET", f"/api/campaigns/{name}", route_params={"name": name})
    return response.status_code, json.loads(response.get_body())


def test_a_thousand_customer_campaign_from_the_csv_to_its_summary(monkeypatch, stored_app, azurite, tmp_path, caplog):
    caplog.set_level(logging.WARNING)  # tens of thousands of INFO lines would only slow the run
    monkeypatch.setenv("PRODUCT_UPGRADE_DEFER_SECONDS", "1")  # "try later" comes back at once ...
    monkeypatch.setenv("PRODUCT_UPGRADE_MAX_DEFERRALS", "1")  # ... once, then ends rejected
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    pc = stored_app.partner_center
    pc.complete_after_polls(2)
    customers = [str(uuid.UUID(int=0x5A1E << 64 | n)) for n in range(CUSTOMERS)]
    ineligible, already, later, failing = customers[:2], customers[2], customers[3], customers[4]
    eligible = customers[4:]  # the failing one is accepted too: its upgrade fails at Partner Center
    for customer in ineligible:
        pc.set_ineligible(customer, "The customer has no Microsoft Azure (MS-AZR-0145P) subscription to upgrade.")
    pc.set_customer_error(already, 400, 900110, "The customer's upgrade has already completed.")
    pc.set_customer_error(later, 403, 900130, "Subscriptions were purchased recently; try again later.")
    pc.set_outcome(failing, "Failed", error_details={"code": "900114", "description": "The upgrade failed."})
    rows = [{"customerId": c, "companyName": f"Contoso {n}"} for n, c in enumerate(customers)]
    rows.insert(CUSTOMERS // 2, {"customerId": "5a1e0000-0000-0000-0000-00000000", "companyName": "hand-edited"})
    csv_path = write_csv(tmp_path / "candidates.csv", rows)

    cli = Cli(tmp_path, stored_app.entra, pc)
    host = Host(azurite.connection_string)
    assert summary(stored_app, "wave-1")[0] == 404  # nothing of it in the ledger yet
    proc = cli.spawn("bulk", str(csv_path), "--report", "report.csv", "--enqueue", "--campaign", "wave-1", "--wait")
    watched: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        last_look = 0.0
        while proc.poll() is None:
            assert time.monotonic() - started < TIME_LIMIT, f"not done after {TIME_LIMIT} s: {host.deliveries}"
            if not host.run_once():
                time.sleep(0.1)
            if time.monotonic() - last_look > 1:
                last_look = time.monotonic()
                status, body = summary(stored_app, "WAVE-1")
                if status == 200:
                    watched.append(body)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout, stderr = proc.communicate(timeout=60)
    for _ in range(3):  # outcomes sent in the last round
        host.run_once()
        time.sleep(0.3)
    elapsed = time.monotonic() - started

    # The command: every row accounted for; the broken row rejected, the rest went on.
    assert proc.returncode == 1, stderr[-2000:]  # refusals and a failed upgrade: exit 1
    report = read_report(tmp_path / "report.csv")
    assert len(report) == CUSTOMERS + 1
    by_customer = {row["customerId"]: row for row in report}
    broken = by_customer["5a1e0000-0000-0000-0000-00000000"]
    assert (broken["status"], broken["errorCode"], broken["companyName"]) == (
        "rejected",
        "invalid_request",
        "hand-edited",
    )
    assert Counter(row["status"] for row in report) == {"accepted": len(eligible), "rejected": 5}
    assert [by_customer[c]["errorCode"] for c in (*ineligible, already, later)] == [
        "not_eligible",
        "not_eligible",
        "already_upgraded",
        "try_again_later",
    ]
    assert Counter(by_customer[c]["outcome"] for c in eligible) == {"completed": len(eligible) - 1, "failed": 1}

    # Partner Center: each eligible customer upgraded once, nobody else.
    assert created_per_customer(pc) == Counter(eligible)

    # The summary route against the ledger's records themselves.
    status, final = summary(stored_app, "wave-1")
    ledger = TableLedger(
        StorageConnection(connection_string=azurite.connection_string), os.environ["PRODUCT_UPGRADE_TABLE"]
    )
    records, token = [], None
    while True:
        page = ledger.list_upgrades(campaign_key="wave-1", top=1000, continuation_token=token)
        records += page.items
        token = page.continuation_token
        if token is None:
            break
    scanned = scanned_counts(records)
    assert status == 200 and scanned is not None
    assert final["counts"] == {
        "running": 0,
        "completed": len(eligible) - 1,
        "partial": 0,
        "failed": 1,
        "expired": 0,
    }
    assert final["counts"] == {state: scanned.counts[state] for state in final["counts"]}
    assert final["upgrades"] == len(records) == len(eligible)
    kept = ledger.campaign_counts("wave-1")
    assert kept is not None and kept.minutes_to_end == scanned.minutes_to_end
    assert (final["firstAcceptedAt"], final["lastAcceptedAt"], final["lastEndedAt"]) == (
        scanned.first_accepted_at,
        scanned.last_accepted_at,
        scanned.last_ended_at,
    )
    assert final["estimatedEndAt"] == final["lastEndedAt"] and final["medianMinutesToEnd"] is not None

    # Watched while it ran: an estimate whenever upgrades were running and some had ended.
    while_running = [body for body in watched if body["counts"]["running"] > 0]
    with_ends = [body for body in while_running if body["lastEndedAt"] is not None]
    assert with_ends, f"never saw upgrades running and ended at once ({len(watched)} looks)"
    assert all(body["estimatedEndAt"] is not None for body in with_ends)

    # Outcome messages: one per upgrade, every one of the campaign.
    per_upgrade = Counter(o["upgradeId"] for o in host.outcomes)
    assert set(per_upgrade) == {r.upgrade_id for r in records} and max(per_upgrade.values()) == 1
    assert {o["campaign"] for o in host.outcomes} == {"wave-1"}

    # The refusals are the campaign's too: what the report's "never became upgrades" lists.
    refused = {r.customer_id: r.error_code for r in ledger.campaign_requests("wave-1") if r.status != "accepted"}
    assert refused == {
        ineligible[0]: "not_eligible",
        ineligible[1]: "not_eligible",
        already: "already_upgraded",
        later: "try_again_later",
    }
    print(
        f"\ncampaign walk of {CUSTOMERS} customers: {elapsed:.1f} s, {len(watched)} summaries watched "
        f"({len(with_ends)} with an estimate while running), final {final}"
    )
