"""``list`` and the HTML campaign report (read back in headless Chromium)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import (
    PARTIAL_DETAILS,
    BackgroundHost,
    Cli,
    customers,
    left_behind,
    read_report,
    script_partial,
    write_csv,
)

# -- list and the HTML campaign report -----------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def campaign_in_the_ledger(stored_app: Any, tmp_path: Path) -> list[Any]:
    """12 upgrades through the command line, tracked by the functions until 8 completed, 3 failed (with
    Partner Center's reasons) and 1 still running; then spread over four hours, as a real campaign is."""
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from shared.upgrades.runtime import get_runtime

    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    ids = customers(12)
    path = write_csv(tmp_path / "wave.csv", [{"customerId": c} for c in ids])
    assert cli.run("bulk", str(path), "--report", "r.csv").code == 0
    upgrades = {u["customer_id"]: u["upgrade_id"] for u in cli.partner_center.created_upgrades}
    for index, customer in enumerate(ids[:11]):
        if index < 8:
            cli.partner_center.set_upgrade_status(upgrades[customer], "Completed")
        else:
            details = {"code": f"90012{index}", "description": f"Subscription {index} could not be transitioned."}
            cli.partner_center.set_upgrade_status(upgrades[customer], "Failed", error_details=details)
    ledger = get_runtime().ledger
    deadline = time.monotonic() + 30
    with BackgroundHost():
        while time.monotonic() < deadline:
            records = ledger.list_upgrades(top=100).items
            if sum(record.outcome_sent for record in records) == 11:
                break
            time.sleep(0.2)
    records = ledger.list_upgrades(top=100).items  # read again now that nothing tracks them any more
    assert sum(record.ended for record in records) == 11
    base = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
    spread = []
    for index, record in enumerate(sorted(records, key=lambda r: r.customer_id)):
        accepted = base + timedelta(minutes=20 * index)
        ended = accepted + timedelta(minutes=7 * (index + 1)) if record.ended else None
        updated = ledger.update_upgrade(
            replace(record, accepted_at=accepted, updated_at=ended or accepted, ended_at=ended)
        )
        assert updated is not None
        spread.append(updated)
    return spread


def nearest_rank_percentile(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-p * len(ordered) // 100) - 1)]


def test_list_counts_states_and_lists_every_upgrade(stored_app: Any, tmp_path: Path) -> None:
    records = campaign_in_the_ledger(stored_app, tmp_path)
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)

    ran = cli.run("list", "--json", "--output", "list.csv")
    human = cli.run("list", "--state", "failed")

    assert ran.code == 0 and human.code == 0
    body = ran.json()
    assert body["counts"] == {"running": 1, "completed": 8, "partial": 0, "failed": 3, "expired": 0}
    # The list route's items, every one (the contract's keys are checked in test_tracking).
    assert sorted(body["items"], key=lambda i: i["upgradeId"]) == sorted(
        (r.to_json() for r in records), key=lambda i: i["upgradeId"]
    )
    rows = read_report(tmp_path / "list.csv")
    assert len(rows) == 12 and {r["upgradeId"] for r in rows} == {r.upgrade_id for r in records}
    assert list(rows[0]) == list(records[0].to_json())
    assert {r["state"] for r in rows} == {"running", "completed", "failed"} and all(r["acceptedAt"] for r in rows)
    assert "failed" in human.stdout and human.stdout.count("Failed") == 3
    one = records[0]
    only = cli.run("list", "--customer", one.customer_id, "--json").json()
    assert [item["upgradeId"] for item in only["items"]] == [one.upgrade_id]
    assert cli.run("list", "--customer", "nope").code == 2


def test_list_without_storage_exits_3(cli: Cli) -> None:
    ran = cli.run("list")
    assert ran.code == 3 and "AzureWebJobsStorage" in ran.stderr


def test_html_report_in_headless_chromium_shows_the_ledgers_numbers(stored_app: Any, tmp_path: Path) -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    records = campaign_in_the_ledger(stored_app, tmp_path)
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    assert cli.run("list", "--html", "report.html").code == 0
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html  # nothing fetched: it opens offline

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((tmp_path / "report.html").as_uri())
        shown = {
            state: int(driver.find_element(By.ID, f"count-{state}").text)
            for state in ("running", "completed", "failed", "expired", "total")
        }
        timeline = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
        ]
        percentiles = {
            cell.get_attribute("id"): (float(cell.get_attribute("data-seconds") or "nan"), cell.text)
            for cell in driver.find_elements(By.CSS_SELECTOR, "#percentiles td")
        }
        failures = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#failures tbody tr")
        ]
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline-chart rect title")
    finally:
        driver.quit()

    states = Counter(r.state for r in records)
    assert shown == {
        "running": states["running"],
        "completed": states["completed"],
        "failed": states["failed"],
        "expired": 0,
        "total": 12,
    }
    accepted_per_hour = Counter(r.accepted_at.strftime("%Y-%m-%d %H:00") for r in records)
    ended_per_hour = Counter(r.ended_at.strftime("%Y-%m-%d %H:00") for r in records if r.ended_at)
    hours = sorted(set(accepted_per_hour) | set(ended_per_hour))
    assert [row[0] for row in timeline] == hours and len(hours) >= 4
    assert [[int(row[1]), int(row[2])] for row in timeline] == [
        [accepted_per_hour[h], ended_per_hour[h]] for h in hours
    ]
    assert len(bars) == 2 * len(hours)
    durations = [(r.ended_at - r.accepted_at).total_seconds() for r in records if r.state == "completed"]
    for p in (50, 90, 95, 99):
        seconds, text = percentiles[f"p{p}"]
        assert seconds == pytest.approx(nearest_rank_percentile(durations, p)) and text.endswith("min")
    assert percentiles["max"][0] == pytest.approx(max(durations))
    failed = {r.upgrade_id: r for r in records if r.state == "failed"}
    assert {row[0] for row in failures} == set(failed) and len(failures) == 3
    for row in failures:
        details = failed[row[0]].error_details  # Partner Center's, as the tracker recorded them
        assert row[2] == "failed" and row[3] == "Failed"
        assert row[5] == f"[{details['code']}] {details['description']}" and "could not be transitioned" in row[5]


def test_list_and_the_html_report_know_partial_upgrades(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    ok, partial = customers(2)
    script_partial(cli.partner_center, partial)
    cli.partner_center.complete_after_polls(0)
    path = write_csv(tmp_path / "c.csv", [{"customerId": ok}, {"customerId": partial}])
    waited = cli.run("bulk", str(path), "--report", "r.csv", "--wait", "--json")  # tracked through the ledger
    assert waited.json()["outcomes"] == {"completed": 1, "partial": 1}

    listed = cli.run("list", "--json", "--html", "report.html")
    only = cli.run("list", "--state", "partial", "--json")
    human = cli.run("list")

    assert listed.json()["counts"] == {"running": 0, "completed": 1, "partial": 1, "failed": 0, "expired": 0}
    assert [(i["customerId"], i["state"]) for i in only.json()["items"]] == [(partial, "partial")]
    assert "partial" in human.stdout
    html = (tmp_path / "report.html").read_text()
    assert '<div class="n" id="count-partial">1</div>' in html
    subscription = left_behind(cli.partner_center, partial)
    assert f"subscription {subscription} Failed: [900114] {PARTIAL_DETAILS['description']}" in html
    assert "<h2>Failures (1)</h2>" in html  # the partial one: someone should look at it


# -- one campaign: its list and its report ---------------------------------------------------------------------


def chromium(window: str = "1280,900") -> Any:
    """Headless Chromium through chromedriver (Debian's packages), or a skip (a failure in CI) without them."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def wave_with_refusals(stored_app: Any, tmp_path: Path) -> dict[str, list[str]]:
    """A campaign "Wave 1" through bulk: 9 upgrades (6 completed, 2 failed with Partner Center's reasons, 1 still
    running, followed by the functions) and 5 requests that never became upgrades (2 not eligible, 1 already
    upgraded, 1 try later, 1 refused by Partner Center as invalid), plus a malformed row."""
    from shared.upgrades.runtime import get_runtime

    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    pc = cli.partner_center
    groups = {"good": customers(9), "ineligible": customers(2), "already": customers(1), "later": customers(1)}
    groups["invalid"] = customers(1)
    for customer in groups["ineligible"]:
        pc.set_ineligible(customer, "The customer has no legacy Azure subscription.")
    pc.set_customer_error(groups["already"][0], 400, 900110, "The upgrade has already completed.")
    pc.set_customer_error(groups["later"][0], 403, 900130, "Subscriptions purchased recently; try again later.")
    pc.set_customer_error(groups["invalid"][0], 400, 900101, "The request is not valid for this customer.")
    rows = [{"customerId": c} for group in groups.values() for c in group] + [{"customerId": "not-a-guid"}]
    path = write_csv(tmp_path / "wave-1.csv", rows)
    assert cli.run("bulk", str(path), "--report", "r.csv", "--campaign", "Wave 1").code == 1
    upgrades = {u["customer_id"]: u["upgrade_id"] for u in pc.created_upgrades}
    for index, customer in enumerate(groups["good"][:8]):
        if index < 6:
            pc.set_upgrade_status(upgrades[customer], "Completed")
        else:
            details = {"code": f"90011{index}", "description": f"Subscription {index} could not be transitioned."}
            pc.set_upgrade_status(upgrades[customer], "Failed", error_details=details)
    ledger = get_runtime().ledger
    deadline = time.monotonic() + 30
    with BackgroundHost():
        while time.monotonic() < deadline:
            if sum(record.outcome_sent for record in ledger.list_upgrades(campaign_key="wave 1").items) == 8:
                break
            time.sleep(0.2)
    return groups


def test_list_campaign_lists_only_its_upgrades_and_refuses_a_bad_name(stored_app: Any, tmp_path: Path) -> None:
    groups = wave_with_refusals(stored_app, tmp_path)
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    other = write_csv(tmp_path / "other.csv", [{"customerId": c} for c in customers(2)])
    assert cli.run("bulk", str(other), "--report", "o.csv").code == 0
    listed = cli.run("list", "--campaign", "WAVE 1", "--json")
    assert listed.code == 0
    body = listed.json()
    assert {item["customerId"] for item in body["items"]} == set(groups["good"])
    assert {item["campaign"] for item in body["items"]} == {"Wave 1"}
    assert body["counts"] == {"running": 1, "completed": 6, "partial": 0, "failed": 2, "expired": 0}
    human = cli.run("list", "--campaign", "wave 1")
    assert human.code == 0 and "Campaign Wave 1" in human.stdout and "estimatedEndAt" in human.stdout
    assert cli.run("list", "--campaign=-x").code == 2


def test_campaign_report_in_headless_chromium_shows_summary_failures_and_requests_never_upgraded(
    stored_app: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    from tests.cli.helpers import png_ink

    groups = wave_with_refusals(stored_app, tmp_path)
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    assert cli.run("list", "--campaign", "wave 1", "--html", "wave.html").code == 0
    html = (tmp_path / "wave.html").read_text()
    assert "<script" not in html and "<link" not in html and "https://" not in html  # it opens offline
    route = stored_app.http("get_campaign_summary", "GET", "/api/campaigns/wave 1", route_params={"name": "wave 1"})
    summary = json.loads(route.get_body())

    driver = chromium()
    try:
        driver.get((tmp_path / "wave.html").as_uri())
        heading = driver.find_element(By.TAG_NAME, "h1").text
        cards = {
            name: int(driver.find_element(By.ID, f"summary-{name}").text)
            for name in ("upgrades", "running", "completed", "partial", "failed", "expired")
        }
        times = {key: driver.find_element(By.ID, f"summary-{key}").text for key in ("estimatedEndAt", "lastEndedAt")}
        check = driver.find_element(By.ID, "summary-check").text
        reasons = {
            row.find_elements(By.TAG_NAME, "td")[0].text: int(row.find_elements(By.TAG_NAME, "td")[2].text)
            for row in driver.find_elements(By.CSS_SELECTOR, "#never-upgraded-reasons tbody tr")
        }
        refused = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#never-upgraded tbody tr")
        ]
        failures = [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, "#failures tbody tr")
        ]
        advice = {
            item.get_attribute("data-code"): item.text for item in driver.find_elements(By.CSS_SELECTOR, "#advice li")
        }
        percentiles = [cell.get_attribute("id") for cell in driver.find_elements(By.CSS_SELECTOR, "#percentiles td")]
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline-chart rect title")
        screenshot = driver.get_screenshot_as_png()
    finally:
        driver.quit()

    (tmp_path / "wave.png").write_bytes(screenshot)
    assert png_ink(screenshot) > 0.02, "the screenshot is blank"
    assert heading == "Campaign Wave 1"
    assert cards == {"upgrades": 9, "running": 1, "completed": 6, "partial": 0, "failed": 2, "expired": 0}
    assert cards == {"upgrades": summary["upgrades"], **summary["counts"]}  # what the summary route answers
    assert times["estimatedEndAt"] == summary["estimatedEndAt"] and times["lastEndedAt"] == summary["lastEndedAt"]
    assert "checked against the 9 records listed below: equal" in check
    assert reasons == {"not eligible": 2, "already upgraded": 1, "try later": 1, "invalid": 1}
    never = {row[0]: row for row in refused}
    assert set(never) == {c for name in ("ineligible", "already", "later", "invalid") for c in groups[name]}
    assert never[groups["later"][0]][1:4] == ["try later", "try_again_later", "900130"]
    assert never[groups["invalid"][0]][1:4] == ["invalid", "partner_center_rejected", "900101"]
    assert len(failures) == 2 and all("could not be transitioned" in row[5] for row in failures)
    assert set(advice) == {"not_eligible", "already_upgraded", "try_again_later", "partner_center_rejected", "failed"}
    assert "already" in advice["already_upgraded"] and "again" in advice["try_again_later"]
    assert percentiles == ["p50", "p90", "p95", "p99", "max"] and bars
