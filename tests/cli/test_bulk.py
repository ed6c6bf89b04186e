"""``bulk``: a campaign from a CSV, straight to Partner Center or through the queue and the ledger."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from shared.cli.campaign import REPORT_COLUMNS, WAIT_COLUMNS
from shared.settings import STORAGE_SETTING
from tests.cli.helpers import (
    PARTIAL_DETAILS,
    BackgroundHost,
    Cli,
    created_per_customer,
    customers,
    left_behind,
    posts_per_customer,
    read_report,
    script_partial,
    write_csv,
)
from tests.cli.terminal import Terminal
from tests.harness import Host

# -- bulk: a campaign ----------------------------------------------------------------------------------------


def test_bulk_500_row_mix_accounts_for_every_row_and_upgrades_each_good_customer_once(cli: Cli) -> None:
    good = customers(420)
    ineligible = customers(20)
    already = customers(20)
    malformed = [f"customer-{i}" for i in range(20)]
    for customer in ineligible:
        cli.partner_center.set_ineligible(customer, "The customer has no legacy Azure subscription.")
    for customer in already:
        cli.partner_center.set_customer_error(
            customer, 400, 900110, "The customer's upgrade has already completed.", operations=("create",)
        )
    duplicates = good[:20]
    ids = good + ineligible + already + malformed + duplicates
    rows = [
        {"customerId": c, "productFamily": "azure" if i % 3 == 0 else "", "crmId": f"crm-{i}"}
        for i, c in enumerate(ids)
    ]
    assert len(rows) == 500
    path = write_csv(cli.folder / "wave-1.csv", rows)
    cli.partner_center.throttle_next(12, retry_after="1", match="/v1/productupgrades")

    ran = cli.run_process("bulk", str(path), "--report", "report.csv", "--json")

    assert ran.code == 1, ran.stderr
    body = ran.json()
    assert body["rows"] == 500 and sum(body["counts"].values()) == 500
    assert body["counts"] == {"accepted": 420, "rejected": 60, "skipped": 20}
    assert body["campaign"] == "wave-1" and body["throttled"] == 12
    report = read_report(cli.folder / "report.csv")
    assert [r["crmId"] for r in report] == [f"crm-{i}" for i in range(500)]  # every row, in the CSV's order
    assert list(report[0]) == ["customerId", "productFamily", "crmId", *REPORT_COLUMNS]
    by_customer = {r["customerId"]: r for r in report[:480]}
    assert all(by_customer[c]["status"] == "accepted" and by_customer[c]["upgradeId"] for c in good)
    assert {by_customer[c]["errorCode"] for c in ineligible} == {"not_eligible"}
    assert {by_customer[c]["partnerCenterErrorCode"] for c in ineligible} == {"900108"}
    assert {(by_customer[c]["errorCode"], by_customer[c]["partnerCenterErrorCode"]) for c in already} == {
        ("already_upgraded", "900110")
    }
    assert all(by_customer[c]["status"] == "rejected" and by_customer[c]["message"] for c in already)
    assert {r["errorCode"] for r in report[460:480]} == {"invalid_request"}
    assert {r["status"] for r in report[480:]} == {"skipped"}
    # Exactly one upgrade per good customer at Partner Center, none for anyone else; one token for the run.
    assert created_per_customer(cli.partner_center) == Counter(good)
    assert len({r["upgradeId"] for r in report if r["upgradeId"]}) == 420
    assert cli.entra.token_requests == 1
    assert "throttled 12" in ran.stderr  # the plain progress line (no terminal here)


def test_bulk_is_parallel_up_to_concurrency_and_never_more(cli: Cli) -> None:
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(24)])
    cli.partner_center.delay_next(24, seconds=0.3, match="/v1/productupgrades")

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--concurrency", "4")

    assert ran.code == 0, ran.stderr
    assert cli.partner_center.max_in_flight == 4
    assert len(cli.partner_center.created_upgrades) == 24


def test_interrupted_run_resumes_from_its_report_without_upgrading_anyone_twice(cli: Cli) -> None:
    ids = customers(300)
    path = write_csv(cli.folder / "big.csv", [{"customerId": c, "note": str(i)} for i, c in enumerate(ids)])
    cli.partner_center.delay_next(300, seconds=0.05, match="/v1/productupgrades")
    report = cli.folder / "report.csv"

    proc = cli.spawn("bulk", str(path), "--report", str(report), "--concurrency", "4")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not report.exists() or len(read_report(report)) < 40):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    first = read_report(report)
    assert 40 <= len(first) < 300
    assert {r["status"] for r in first} == {"accepted"}
    assert "interrupted" in stderr
    # In-flight calls finished and were reported: Partner Center made no upgrade the report does not show.
    assert len(cli.partner_center.created_upgrades) == len(first)

    cli.partner_center.clear_faults()
    ran = cli.run_process("bulk", str(path), "--report", str(report), "--concurrency", "4", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["counts"] == {"accepted": 300}
    final = read_report(report)
    assert [r["note"] for r in final] == [str(i) for i in range(300)]
    kept = {r["customerId"]: r["upgradeId"] for r in first}
    assert all(r["upgradeId"] == kept[r["customerId"]] for r in final if r["customerId"] in kept)
    assert posts_per_customer(cli.partner_center) == Counter(ids)  # one POST per customer over both runs
    assert created_per_customer(cli.partner_center) == Counter(ids)


def test_rerun_retries_refused_rows_with_the_same_request_ids(cli: Cli) -> None:
    ok, flaky = customers(2)
    path = write_csv(cli.folder / "c.csv", [{"customerId": ok}, {"customerId": flaky}])
    cli.partner_center.set_customer_error(flaky, 409, 900101, "Conflict", operations=("create",))

    first = cli.run("bulk", str(path), "--report", "r.csv")
    cli.partner_center.clear_customer_error(flaky)
    second = cli.run("bulk", str(path), "--report", "r.csv", "--json")

    assert (first.code, second.code) == (1, 0)
    assert second.json()["counts"] == {"accepted": 2}
    posts = cli.partner_center.requests_to("/v1/productupgrades", "POST")
    flaky_ids = {r.header("MS-RequestId") for r in posts if r.json()["customerId"] == flaky}
    # ok sent once, flaky twice with one MS-RequestId: without storage no count of answers is kept (see
    # test_bulk_rerun_after_a_refusal_sends_the_next_ms_request_id for the ledger's)
    assert len(flaky_ids) == 1 and len(posts) == 3


def test_bulk_wait_polls_until_every_upgrade_has_ended(cli: Cli) -> None:
    ids = customers(6)
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in ids])
    cli.partner_center.complete_after_polls(2)

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--wait", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["outcomes"] == {"completed": 6}
    report = read_report(cli.folder / "r.csv")
    assert list(report[0])[-2:] == list(WAIT_COLUMNS)
    assert {(r["outcome"], r["partnerCenterStatus"]) for r in report} == {("completed", "Completed")}
    assert len(report) == 6


def test_bulk_wait_reports_failed_upgrades_and_exits_1(cli: Cli) -> None:
    ids = customers(2)
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in ids])
    cli.run("bulk", str(path), "--report", "r.csv")
    failed = next(u for u in cli.partner_center.created_upgrades if u["customer_id"] == ids[1])["upgrade_id"]
    cli.partner_center.set_upgrade_status(failed, "Failed", error_details={"code": "1001", "description": "No."})
    cli.partner_center.complete_after_polls(
        0, next(u["upgrade_id"] for u in cli.partner_center.created_upgrades if u["customer_id"] == ids[0])
    )

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--wait", "--json")

    assert ran.code == 1
    assert ran.json()["outcomes"] == {"completed": 1, "failed": 1}
    assert len(cli.partner_center.created_upgrades) == 2


def test_bulk_with_eligibility_check_reports_partner_centers_reason(cli: Cli) -> None:
    ok, no = customers(2)
    cli.partner_center.set_ineligible(no, "Subscriptions purchased recently.")
    path = write_csv(cli.folder / "c.csv", [{"customerId": ok}, {"customerId": no}])

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--check-eligibility")

    assert ran.code == 1
    report = read_report(cli.folder / "r.csv")
    assert report[1]["errorCode"] == "not_eligible" and "purchased recently" in report[1]["message"]
    assert cli.partner_center.create_posts == 1
    assert "Rows by error code" in ran.stdout and "not_eligible" in ran.stdout


def test_bulk_failures_after_retries_are_reported_failed(cli: Cli) -> None:
    (customer,) = customers(1)
    path = write_csv(cli.folder / "c.csv", [{"customerId": customer}])
    cli.partner_center.fail_next(5, 503, headers={"Retry-After": "0"}, match="/v1/productupgrades")

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")

    assert ran.code == 1
    assert read_report(cli.folder / "r.csv")[0]["errorCode"] == "partner_center_unavailable"
    assert ran.json()["counts"] == {"failed": 1}


def test_request_id_column_fixes_the_ms_request_id(cli: Cli) -> None:
    (customer,) = customers(1)
    path = write_csv(cli.folder / "c.csv", [{"customerId": customer, "requestId": "crm-4711"}])

    assert cli.run("bulk", str(path), "--report", "r.csv").code == 0

    from shared.upgrades.workflow import request_id_for

    (post,) = cli.partner_center.requests_to("/v1/productupgrades", "POST")
    assert post.header("MS-RequestId") == request_id_for("queue-request", "crm-4711")


# -- with storage: the queue function and the ledger ---------------------------------------------------------


def test_enqueue_round_trip_through_the_queue_function_and_the_ledger(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    good = customers(30)
    ineligible = str(uuid.uuid4())
    cli.partner_center.set_ineligible(ineligible, "No legacy subscription.")
    cli.partner_center.complete_after_polls(1)
    path = write_csv(tmp_path / "wave.csv", [{"customerId": c} for c in [*good, ineligible, "bad-id"]])

    with BackgroundHost() as host:
        ran = cli.run_process("bulk", str(path), "--report", "r.csv", "--enqueue", "--wait", "--json")
        assert ran.code == 1, ran.stderr
        body = ran.json()
        assert body["counts"] == {"accepted": 30, "rejected": 2} and body["outcomes"] == {"completed": 30}
        report = read_report(tmp_path / "r.csv")
        assert {(r["status"], r["outcome"], r["partnerCenterStatus"]) for r in report[:30]} == {
            ("accepted", "completed", "Completed")
        }
        assert (report[30]["errorCode"], report[30]["partnerCenterErrorCode"]) == ("not_eligible", "900108")
        assert report[31]["errorCode"] == "invalid_request"
        assert created_per_customer(cli.partner_center) == Counter(good)
        # Results are left for whoever consumes them (the host here): one per message, none taken by the CLI.
        deadline = time.monotonic() + 10
        while (len(host.results), len(host.outcomes)) != (31, 30) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (len(host.results), len(host.outcomes)) == (31, 30)

        # Again with the same report: accepted rows kept, the refused one asked again (a fresh result).
        again = cli.run_process("bulk", str(path), "--report", "r.csv", "--enqueue", "--json")
        assert again.code == 1 and again.json()["counts"] == {"accepted": 30, "rejected": 2}
        assert posts_per_customer(cli.partner_center)[ineligible] == 2
        assert created_per_customer(cli.partner_center) == Counter(good)
        assert host.deliveries["requests"] == 32
    assert read_report(tmp_path / "r.csv")[0]["outcome"] == "completed"  # kept as it was


def test_enqueue_without_storage_exits_3_naming_it(cli: Cli) -> None:
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(1)])
    ran = cli.run("bulk", str(path), "--report", "r.csv", "--enqueue")
    assert ran.code == 3 and "AzureWebJobsStorage" in ran.stderr


def test_direct_wait_with_storage_tracks_through_the_ledger(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    ids = customers(5)
    cli.partner_center.complete_after_polls(1)
    path = write_csv(tmp_path / "c.csv", [{"customerId": c} for c in ids])

    with contextlib.ExitStack():
        os.environ["PRODUCT_UPGRADE_POLL_SECONDS"] = "0.2"
        ran = cli.run("bulk", str(path), "--report", "r.csv", "--wait", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["outcomes"] == {"completed": 5}
    from shared.upgrades.runtime import get_runtime

    ledger = get_runtime().ledger
    states = [u.state for u in ledger.list_upgrades(top=100).items]
    assert states == ["completed"] * 5
    host = Host(os.environ[STORAGE_SETTING])
    host.run_once()
    assert len(host.outcomes) == 5  # the tracker's outcome messages, one per upgrade


def test_a_second_ctrl_c_stops_within_a_second_and_the_rows_in_flight_are_asked_again(cli: Cli) -> None:
    ids = customers(40)
    path = write_csv(cli.folder / "wave.csv", [{"customerId": c} for c in ids])
    cli.partner_center.delay_next(40, seconds=10, match="/v1/productupgrades")  # every create stays in flight
    terminal = Terminal(
        ["bulk", str(path), "--report", "report.csv", "--concurrency", "4"], cwd=cli.folder, env=cli.env()
    )
    try:
        deadline = time.monotonic() + 30
        while cli.partner_center.create_posts < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cli.partner_center.create_posts == 4

        terminal.ctrl_c()
        assert terminal.wait_for("finishing the 4 calls in flight", timeout=2), terminal.text
        assert terminal.proc.poll() is None  # still waiting for them
        started = time.monotonic()
        terminal.ctrl_c()
        code = terminal.proc.wait(timeout=10)
        stopped_after = time.monotonic() - started
    finally:
        terminal.close()

    assert code == 130, terminal.text
    assert stopped_after < 1.0, f"the second Ctrl-C took {stopped_after:.2f} s"
    assert "stopping now: 4 calls in flight are reported unknown" in terminal.text
    first = read_report(cli.folder / "report.csv")
    assert [(row["status"], row["errorCode"]) for row in first] == [("failed", "unknown")] * 4
    # The creates held in flight land at Partner Center after the process has gone; the next run asks again with
    # the same MS-RequestIds and gets those upgrades back: nobody is upgraded twice.
    cli.partner_center.clear_faults()
    ran = cli.run_process("bulk", str(path), "--report", "report.csv", "--concurrency", "4", "--json")
    assert ran.code == 0, ran.stderr
    assert ran.json()["counts"] == {"accepted": 40}
    assert created_per_customer(cli.partner_center) == Counter(ids)


# -- partial upgrades, and the MS-RequestId after a refusal ------------------------------------------------------
def test_bulk_wait_reports_a_partial_upgrade_with_the_subscription_left_behind_and_exits_1(cli: Cli) -> None:
    ok, partial = customers(2)
    script_partial(cli.partner_center, partial)
    cli.partner_center.complete_after_polls(1)
    path = write_csv(cli.folder / "c.csv", [{"customerId": ok}, {"customerId": partial}])

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--wait", "--json")

    assert ran.code == 1  # not everything completed
    assert ran.json()["outcomes"] == {"completed": 1, "partial": 1}
    rows = {row["customerId"]: row for row in read_report(cli.folder / "r.csv")}
    assert (rows[partial]["outcome"], rows[partial]["partnerCenterStatus"]) == ("partial", "Completed")
    subscription = left_behind(cli.partner_center, partial)
    expected = f"not upgraded: subscription {subscription} Failed: [900114] {PARTIAL_DETAILS['description']}"
    assert rows[partial]["message"] == expected
    assert rows[ok]["outcome"] == "completed"


def test_bulk_rerun_after_a_refusal_sends_the_next_ms_request_id(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    cli.partner_center.replay_refusals()  # Partner Center answers a known MS-RequestId as it did before
    [customer] = customers(1)
    cli.partner_center.set_customer_error(
        customer, 403, 900130, "Purchased recently; please try again later.", operations=("create",), times=1
    )
    path = write_csv(tmp_path / "c.csv", [{"customerId": customer}])

    first = cli.run("bulk", str(path), "--report", "r.csv")
    second = cli.run("bulk", str(path), "--report", "r.csv", "--json")

    assert (first.code, second.code) == (1, 0)
    assert second.json()["counts"] == {"accepted": 1}
    sent = [r.header("MS-RequestId") for r in cli.partner_center.requests_to("/v1/productupgrades", "POST")]
    assert len(sent) == 2 and sent[0] != sent[1]


# -- the campaign recorded -----------------------------------------------------------------------------------------


def test_bulk_records_its_campaign_named_after_the_csv_without_extension(stored_app: Any, tmp_path: Path) -> None:
    from shared.upgrades.runtime import get_runtime

    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    ids = customers(3)
    refused = str(uuid.uuid4())
    cli.partner_center.set_ineligible(refused, "No legacy subscription.")
    path = write_csv(tmp_path / "Spring 2027.csv", [{"customerId": c} for c in [*ids, refused]])
    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")
    assert ran.code == 1 and ran.json()["campaign"] == "Spring 2027"
    ledger = get_runtime().ledger
    listed = ledger.list_upgrades(campaign_key="spring 2027").items
    assert {r.customer_id for r in listed} == set(ids) and {r.campaign.name for r in listed} == {"Spring 2027"}
    counts = ledger.campaign_counts("spring 2027")
    assert counts is not None and counts.counts["running"] == 3
    [refusal] = [r for r in ledger.campaign_requests("spring 2027") if r.status != "accepted"]
    assert (refusal.customer_id, refusal.error_code) == (refused, "not_eligible")


def test_bulk_request_ids_are_still_those_of_reports_written_before_campaigns(cli: Cli) -> None:
    """Reports written before the campaign was recorded resume with the same MS-RequestIds: a row's id is still
    derived from the file name with its extension (or --campaign), whatever name is recorded."""
    from shared.ids import request_id_for

    [customer] = customers(1)
    path = write_csv(cli.folder / "wave-1.csv", [{"customerId": customer}])
    assert cli.run("bulk", str(path), "--report", "r.csv").code == 0
    assert cli.run("bulk", str(path), "--report", "r2.csv", "--campaign", "other").code == 0
    sent = [r.header("MS-RequestId") for r in cli.partner_center.requests_to("/v1/productupgrades", "POST")]
    assert sent == [
        request_id_for("queue-request", f"wave-1.csv:{customer}:azure"),
        request_id_for("queue-request", f"other:{customer}:azure"),
    ]


def test_bulk_refuses_a_campaign_name_outside_the_rules_and_records_none_for_such_a_file_name(cli: Cli) -> None:
    path = write_csv(cli.folder / "wave (EU).csv", [{"customerId": c} for c in customers(1)])
    given = cli.run("bulk", str(path), "--report", "r.csv", "--campaign=-wave")
    assert given.code == 2 and "--campaign must be 1 to 64 characters" in given.stderr
    assert cli.partner_center.requests == []
    # The default, the file name, is not a campaign name: the run goes on, recording none, and says so (as
    # discover does with its output's name).
    default = cli.run("bulk", str(path), "--report", "r.csv", "--json")
    assert default.code == 0 and "'wave (EU)' is not a campaign name: no campaign is recorded" in default.stderr
    assert cli.run("bulk", str(path), "--report", "r2.csv", "--campaign", "wave-EU").code == 0
