"""The "Run a campaign" walk of docs/campaigns.md against the loopback sandbox and Azurite, with the sandbox's
population of 1,000 customers: ``discover`` (in this process), a hand edit of its CSV that breaks a row, then
``bulk --enqueue --campaign wave-1 --wait`` (the real command line, a child process) while the functions host's
loop (tests/harness.py) runs the queue and tracking functions, and the summary route watched as the wave runs.

Checked: discover keeps exactly the population's legacy customers; every eligible one is upgraded exactly once,
nobody twice; the summary route's counts equal the ledger's records, exactly, at the end; ``estimatedEndAt`` is set
while upgrades run and some have ended; ``running`` ends at 0; every outcome message carries ``campaign:
"wave-1"``; the broken row is rejected and the rest go on; the refusals are recorded under the campaign.

Smaller: ``CAMPAIGN_WALK_CUSTOMERS=200 scripts/check test tests/test_campaign_walk.py -s``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from sandbox.customers import CANCELLED_UPGRADE, FAILING_UPGRADE, PARTIAL_UPGRADE, THROTTLED, TRY_LATER
from sandbox.population import Population
from shared.settings import Settings, StorageConnection
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime
from shared.upgrades.campaigns import scanned_counts
from tests.cli.helpers import Cli, created_per_customer, read_report
from tests.harness import FAST_POLICY, Host

CUSTOMERS = int(os.environ.get("CAMPAIGN_WALK_CUSTOMERS", "1000"))
#: The scripted customers whose upgrade does not complete, and how it ends; every other one completes.
ENDINGS = {FAILING_UPGRADE: "failed", CANCELLED_UPGRADE: "failed", PARTIAL_UPGRADE: "partial"}
TIME_LIMIT = 1200  # one process plays the host, the app and Partner Center; the CLI is another: CPU-bound


def expected_outcomes(upgraded: set[str]) -> dict[str, int]:
    ended = Counter(ENDINGS[c] for c in upgraded if c in ENDINGS)
    return {"completed": len(upgraded) - sum(ended.values()), "partial": ended["partial"], "failed": ended["failed"]}


def summary(app: Any, name: str) -> tuple[int, dict[str, Any]]:
    response = app.http("get_campaign_summary", "GET", f"/api/campaigns/{name}", route_params={"name": name})
    return response.status_code, json.loads(response.get_body())


def discover_and_break_a_row(cli: Cli, population: Population) -> tuple[list[dict[str, str]], str]:
    """``discover`` into candidates.csv, checked against the population; then the review: one customer id cut short
    by hand. The rows, and the customer whose row was broken."""
    ran = cli.run("discover", "--output", "candidates.csv", "--json")
    assert ran.code == 1, ran.stderr  # unreadable customers are written, and the run says so
    rows = read_report(cli.folder / "candidates.csv")
    assert {row["customerId"] for row in rows} == population.kept | population.ids("unreadable")
    assert ran.json()["counts"]["kept"] == len(population.kept)
    broken = next(row for row in rows if row["customerId"] in population.eligible - set(ENDINGS))
    customer = broken["customerId"]
    broken["customerId"] = customer[:23]
    with open(cli.folder / "candidates.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows, customer


def test_a_campaign_from_discovery_to_its_summary(monkeypatch, stored_app, azurite, tmp_path, caplog):
    caplog.set_level(logging.WARNING)  # tens of thousands of INFO lines would only slow the run
    monkeypatch.setenv("PRODUCT_UPGRADE_DEFER_SECONDS", "1")  # "try later" comes back at once ...
    monkeypatch.setenv("PRODUCT_UPGRADE_MAX_DEFERRALS", "1")  # ... once, then ends rejected
    runtime.install(runtime.Runtime.build(Settings.from_env(), policy=FAST_POLICY, poll_interval_seconds=1))
    pc = stored_app.partner_center
    pc.complete_after_polls(2)
    population = Population.build(CUSTOMERS)
    population.install(pc)
    cli = Cli(tmp_path, stored_app.entra, pc)
    rows, broken_customer = discover_and_break_a_row(cli, population)
    # Who Partner Center upgrades: the eligible customers of the CSV (the broken row never reaches it), and the
    # unreadable ones whose upgrade calls say yes; the throttled one never gets through.
    upgraded = {c for c in population.eligible if c != broken_customer} | {
        c.customer_id for c in population.customers if c.verdict == "unreadable" and c.kind == "legacy"
    }
    upgraded -= {THROTTLED}

    host = Host(azurite.connection_string)
    assert summary(stored_app, "wave-1")[0] == 404  # nothing of it in the ledger yet
    # The real entry point in a child process; its output to files (a pipe nobody reads would fill and block it).
    with open(tmp_path / "bulk.out", "w") as out, open(tmp_path / "bulk.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "bulk", "candidates.csv", "--report", "report.csv"]
            + ["--enqueue", "--campaign", "wave-1", "--wait"],
            cwd=tmp_path,
            env=cli.env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
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
    proc.wait(timeout=60)
    stderr = (tmp_path / "bulk.err").read_text()
    for _ in range(3):  # outcomes sent in the last round
        host.run_once()
        time.sleep(0.3)
    elapsed = time.monotonic() - started

    # The command: every row accounted for; the broken row rejected, the rest went on.
    assert proc.returncode == 1, stderr[-2000:]  # refusals and a failed upgrade: exit 1
    report = read_report(tmp_path / "report.csv")
    assert len(report) == len(rows)
    by_customer = {row["customerId"]: row for row in report}
    broken = by_customer[broken_customer[:23]]
    assert (broken["status"], broken["errorCode"]) == ("rejected", "invalid_request")
    accepted = {row["customerId"] for row in report if row["status"] == "accepted"}
    assert accepted == upgraded
    assert by_customer[TRY_LATER]["errorCode"] == "try_again_later"
    assert {c: by_customer[c]["outcome"] for c in ENDINGS} == ENDINGS
    assert Counter(by_customer[c]["outcome"] for c in upgraded) == expected_outcomes(upgraded)

    # Partner Center: each of them upgraded once, nobody else.
    assert created_per_customer(pc) == Counter(upgraded)

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
    assert final["counts"] == {"running": 0, "expired": 0, **expected_outcomes(upgraded)}
    assert final["counts"] == {state: scanned.counts[state] for state in final["counts"]}
    assert final["upgrades"] == len(records) == len(upgraded)
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
    expected = {
        row["customerId"]: row["errorCode"]
        for row in report
        if row["status"] in ("rejected", "failed") and row["errorCode"] != "invalid_request"
    }
    assert refused == expected and refused[TRY_LATER] == "try_again_later"
    # Every row of the CSV is accounted for: upgraded, refused under the campaign, or the broken one.
    assert set(refused) | upgraded | {broken_customer[:23]} == {row["customerId"] for row in rows}
    print(
        f"\ncampaign walk of {CUSTOMERS} customers ({len(rows)} discovered): {elapsed:.1f} s, {len(watched)} summaries "
        f"watched ({len(with_ends)} with an estimate while running), final {final}"
    )
