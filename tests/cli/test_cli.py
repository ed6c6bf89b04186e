"""The operators' command line, against the loopback fakes (and Azurite where storage matters).

Campaign-sized runs go through the real entry point as a subprocess (``python -m shared.cli``); the rest call
``main()`` in-process, with the same settings and fakes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import APP_ID, APP_SECRET, TENANT_ID, FakeEntra, FakePartnerCenter
from shared.cli import main as cli_main
from shared.cli.campaign import REPORT_COLUMNS, WAIT_COLUMNS
from shared.cli.progress import CampaignProgress, summary_tables
from shared.settings import STORAGE_SETTING
from tests.harness import Host, set_app_env

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs the command line in ``folder`` with the app's settings pointing at the fakes."""

    def __init__(self, folder: Path, entra: FakeEntra, partner_center: FakePartnerCenter) -> None:
        self.folder = folder
        self.entra = entra
        self.partner_center = partner_center

    def run(self, *args: str) -> Ran:
        """``main(args)`` in this process, in ``folder``; os.environ is restored after (local.settings.json is
        applied to it)."""
        saved = dict(os.environ)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.chdir(self.folder), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main.main(list(args))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return Ran(code, out.getvalue(), err.getvalue())

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """The real entry point, ``python -m shared.cli``, as a child process."""
        return subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=self.folder,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run_process(self, *args: str, timeout: float = 120) -> Ran:
        proc = self.spawn(*args)
        stdout, stderr = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, stdout, stderr)


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entra: FakeEntra, partner_center: FakePartnerCenter
) -> Iterator[Cli]:
    set_app_env(monkeypatch, entra, partner_center)
    monkeypatch.setenv("PRODUCT_UPGRADE_POLL_SECONDS", "0.1")
    yield Cli(tmp_path, entra, partner_center)


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def customers(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def posts_per_customer(partner_center: FakePartnerCenter) -> Counter[str]:
    """Create POSTs that reached Partner Center's handler, by customer (what "upgraded twice" would show)."""
    return Counter(r.json()["customerId"] for r in partner_center.requests_to("/v1/productupgrades", "POST"))


def created_per_customer(partner_center: FakePartnerCenter) -> Counter[str]:
    return Counter(u["customer_id"] for u in partner_center.created_upgrades)


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
    assert body["campaign"] == "wave-1.csv" and body["throttled"] == 12
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
    assert len(flaky_ids) == 1 and len(posts) == 3  # ok sent once, flaky twice with one MS-RequestId


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


# -- exit codes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("", "empty"),
        ("customerId\n", "no data rows"),
        ("customer,name\nx,y\n", "no customerId column"),
        (b"customerId\n\xff\xfe\n", "could not be read"),
    ],
)
def test_unusable_csv_is_a_usage_error(cli: Cli, content: str | bytes | None, expected: str) -> None:
    path = cli.folder / "in.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")

    assert ran.code == 2
    assert expected in ran.json()["error"]["message"] and expected in ran.stderr
    assert cli.partner_center.requests == [] and not (cli.folder / "r.csv").exists()


def test_bad_arguments_are_usage_errors(cli: Cli) -> None:
    assert cli.run("upgrade", "not-a-guid").code == 2
    assert cli.run("status", "abc", "--customer", "nope").code == 2
    assert cli.run("status", "a/b", "--customer", str(uuid.uuid4())).code == 2
    assert cli.run("eligibility", str(uuid.uuid4()), "--product-family", "Azure plan!").code == 2
    with pytest.raises(SystemExit) as exited:
        cli.run("bulk", "x.csv", "--report", "r.csv", "--concurrency", "0")
    assert exited.value.code == 2
    assert cli.partner_center.requests == []


def test_missing_setting_exits_3_naming_it(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(2)])

    for args in (("upgrade", str(uuid.uuid4())), ("bulk", str(path), "--report", "r.csv")):
        ran = cli.run(*args, "--json")
        assert ran.code == 3
        assert "PARTNER_CENTER_TENANT_ID" in ran.json()["error"]["message"]
        assert "PARTNER_CENTER_TENANT_ID" in ran.stderr


def test_missing_secret_setting_exits_3_before_sending(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTNER_CENTER_APP_SECRET")
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(2)])

    ran = cli.run("bulk", str(path), "--report", "r.csv")

    assert ran.code == 3 and "PARTNER_CENTER_APP_SECRET" in ran.stderr
    assert cli.partner_center.requests == []


def test_refused_refresh_token_exits_3_telling_to_consent_again(cli: Cli) -> None:
    cli.entra.expire_refresh_tokens()
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(3)])

    for args in (("bulk", str(path), "--report", "r.csv"), ("upgrade", str(uuid.uuid4()))):
        ran = cli.run(*args)
        assert ran.code == 3
        assert "invalid_grant" in ran.stderr and "product-upgrades consent" in ran.stderr
    assert cli.partner_center.requests == []


def test_token_rejected_midway_stops_the_campaign_with_exit_3(cli: Cli) -> None:
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(5)])
    cli.partner_center.fail_next(
        50, 401, {"code": "900420", "description": "Invalid Token"}, match="/v1/productupgrades"
    )

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--concurrency", "1")

    assert ran.code == 3 and "Partner Center answered 401" in ran.stderr
    assert cli.partner_center.create_posts <= 2  # the first row (and its one retry with a fresh token), no more


def test_settings_come_from_local_settings_json_when_not_in_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {name: os.environ[name] for name in ("PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_BASE_URL")}
    for name in values:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PARTNER_CENTER_AUTHORITY_HOST", "")  # empty counts as unset: the file's value is used
    values["PARTNER_CENTER_AUTHORITY_HOST"] = cli.entra.url
    (cli.folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    ran = cli.run("eligibility", str(uuid.uuid4()), "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["isEligible"] is True


def test_environment_wins_over_local_settings_json(cli: Cli) -> None:
    (cli.folder / "local.settings.json").write_text(
        json.dumps({"Values": {"PARTNER_CENTER_BASE_URL": "https://127.0.0.1:9/nowhere"}})
    )
    assert cli.run("eligibility", str(uuid.uuid4())).code == 0


def test_broken_local_settings_json_exits_3(cli: Cli) -> None:
    (cli.folder / "local.settings.json").write_text("{not json")
    ran = cli.run("eligibility", str(uuid.uuid4()))
    assert ran.code == 3 and "local.settings.json is not valid JSON" in ran.stderr
    (cli.folder / "local.settings.json").write_text('{"Values": ["a"]}')
    assert cli.run("eligibility", str(uuid.uuid4())).code == 3


# -- one upgrade ---------------------------------------------------------------------------------------------


def test_upgrade_prints_the_create_routes_body(cli: Cli) -> None:
    customer = str(uuid.uuid4())

    ran = cli.run("upgrade", customer.upper(), "--json")

    assert ran.code == 0
    body = ran.json()
    assert body == {
        "upgradeId": cli.partner_center.created_upgrades[0]["upgrade_id"],
        "customerId": customer,
        "productFamily": "Azure",
        "status": "accepted",
    }
    human = cli.run("upgrade", str(uuid.uuid4()), "--idempotency-key", "k-1")
    assert human.code == 0 and human.stdout.strip() == cli.partner_center.created_upgrades[1]["upgrade_id"]


def test_upgrade_idempotency_key_maps_like_the_http_route(cli: Cli) -> None:
    from shared.upgrades.workflow import request_id_for

    customer = str(uuid.uuid4())
    cli.run("upgrade", customer, "--idempotency-key", "ticket-42")
    (post,) = cli.partner_center.requests_to("/v1/productupgrades", "POST")
    assert post.header("MS-RequestId") == request_id_for("idempotency-key", "ticket-42")


def test_upgrade_refused_exits_1_with_partner_centers_code(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    cli.partner_center.set_ineligible(customer, "Not a legacy customer.")

    ran = cli.run("upgrade", customer, "--check-eligibility", "--json")

    assert ran.code == 1
    assert ran.json()["error"]["code"] == "not_eligible"
    assert cli.partner_center.create_posts == 0


def test_upgrade_wait_follows_until_completed(cli: Cli) -> None:
    cli.partner_center.complete_after_polls(2)

    ran = cli.run("upgrade", str(uuid.uuid4()), "--wait", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["outcome"] == "completed" and ran.json()["partnerCenterStatus"] == "Completed"
    assert cli.partner_center.status_polls == 3
    assert ran.stderr.count(": InProgress") == 2


def test_eligibility_answers_are_successes(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    cli.partner_center.set_ineligible(customer, "No legacy subscription.")

    ran = cli.run("eligibility", customer, "--json")
    human = cli.run("eligibility", customer)

    assert ran.code == 0 and human.code == 0
    assert ran.json() == {
        "customerId": customer,
        "productFamily": "Azure",
        "isEligible": False,
        "upgradeId": None,
        "reason": "No legacy subscription.",
    }
    assert human.stdout.strip() == "not eligible: No legacy subscription."
    assert cli.run("eligibility", str(uuid.uuid4())).stdout.startswith("eligible")


def test_status_prints_the_status_document_and_waits(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    upgrade_id = cli.partner_center.add_upgrade(customer)

    running = cli.run("status", upgrade_id, "--customer", customer, "--json")
    cli.partner_center.complete_after_polls(1, upgrade_id)
    waited = cli.run("status", upgrade_id, "--customer", customer, "--wait", "--json")

    assert running.code == 0 and waited.code == 0
    assert running.json()["status"] == "InProgress" and running.json()["upgradeId"] == upgrade_id
    assert set(running.json()) == {
        "upgradeId",
        "customerId",
        "id",
        "productFamily",
        "status",
        "lineItems",
        "errorDetails",
    }
    assert waited.json()["status"] == "Completed"
    missing = cli.run("status", "nope", "--customer", customer)
    assert missing.code == 1 and "900106" in missing.stderr


def test_status_wait_of_a_failed_upgrade_exits_1(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    upgrade_id = cli.partner_center.add_upgrade(customer, status="Failed")
    # Partner Center down for longer than one call's retries: the wait asks again after the poll interval.
    cli.partner_center.fail_next(5, 503, headers={"Retry-After": "0"}, match="status")

    ran = cli.run("status", upgrade_id, "--customer", customer, "--wait")

    assert ran.code == 1 and '"status": "Failed"' in ran.stdout
    assert len(cli.partner_center.requests_to("status")) == 6
    unknown = cli.run("status", "0f0f0f0f", "--customer", customer, "--wait")
    assert unknown.code == 1 and "900106" in unknown.stderr


# -- progress and summary ------------------------------------------------------------------------------------


def test_live_progress_bar_shows_counts_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # an operator's terminal; rich reads its width from COLUMNS
    stream = io.StringIO()
    with CampaignProgress(10, "bulk wave", stream=stream, force_terminal=True) as progress:
        for status in ("accepted", "accepted", "rejected"):
            progress.finished(status)
        progress.count("throttled", 2)
        progress.restart(2, "wait wave", ("completed", "failed", "throttled"))
        progress.finished("completed")
    text = stream.getvalue()
    assert progress.live
    assert "bulk wave" in text and "3/10" in text and "/s" in text and "ETA" in text
    assert "accepted 2 rejected 1 failed 0 throttled 2" in text
    assert "wait wave" in text and "1/2" in text and "completed 1 failed 0 throttled 2" in text


def test_plain_progress_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    with CampaignProgress(4, "bulk", stream=stream, interval=0.05) as progress:
        progress.carry(["accepted", "skipped"])  # from the last run: no work now, so no rate yet
        assert progress.line().startswith("bulk: 2/4 done, 0.0/s, ETA -; accepted 1")
        progress.finished("accepted")
        time.sleep(0.2)
        progress.restart(1, "wait", ("completed", "failed"))
        progress.finished("completed")
    lines = stream.getvalue().splitlines()
    assert not progress.live and len(lines) >= 4
    assert lines[0].startswith("bulk: 0/4 done")
    assert any(line.startswith("bulk: 3/4 done") and "ETA" in line for line in lines)
    assert lines[-1].startswith("wait: 1/1 done") and lines[-1].endswith("completed 1 failed 0")


def test_summary_tables_count_by_status_error_and_outcome() -> None:
    tables = summary_tables({"accepted": 3, "rejected": 1}, {"not_eligible": 1}, {})
    assert [t.title for t in tables] == ["Rows by status", "Rows by error code"]
    assert tables[0].row_count == 3  # two statuses and the total


# -- packaging -----------------------------------------------------------------------------------------------


def test_console_script_points_at_main() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["product-upgrades"] == "shared.cli.main:main"
    assert callable(cli_main.main)
    ran = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 0
    for command in ("upgrade", "eligibility", "status", "bulk", "list", "consent"):
        assert command in ran.stdout


def test_campaign_csv_needs_only_a_customer_column_in_any_case(cli: Cli) -> None:
    path = cli.folder / "c.csv"
    path.write_text(f"CustomerID,Region\n{uuid.uuid4()},EU\n,\n")
    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")
    assert ran.code == 0 and ran.json()["rows"] == 1  # the blank line is no row
    assert read_report(cli.folder / "r.csv")[0]["Region"] == "EU"


# -- consent -------------------------------------------------------------------------------------------------


def _sign_in(proc: subprocess.Popen[str]) -> requests.Response:
    """The browser's part: open the sign-in URL the command printed and follow Entra's redirect back to it."""
    assert proc.stderr is not None
    for _ in range(20):
        line = proc.stderr.readline()
        if line.startswith("https://"):
            return requests.get(line.strip(), timeout=10)
    raise AssertionError("the command printed no sign-in URL")


def test_consent_stores_the_refresh_token_in_local_settings_without_printing_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")  # the first consent: there is none yet
    (cli.folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {"Other": "kept"}}))

    proc = cli.spawn("consent", "--no-browser", "--port", "0", "--json")
    page = _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    assert page.status_code == 200 and "Signed in" in page.text
    values = json.loads((cli.folder / "local.settings.json").read_text())["Values"]
    token = values["PARTNER_CENTER_REFRESH_TOKEN"]
    assert values["Other"] == "kept"
    assert token == cli.entra.current_refresh_token and token in cli.entra.valid_refresh_tokens
    assert token not in stdout and token not in stderr
    assert json.loads(stdout)["status"] == "stored"
    authorize = cli.entra.requests_to("/oauth2/v2.0/authorize")[0].query
    assert authorize["scope"].split()[0] == "https://api.partnercenter.microsoft.com/user_impersonation"
    assert authorize["code_challenge_method"] == "S256" and authorize["redirect_uri"].startswith("http://localhost:")
    grant = cli.entra.requests_to("/oauth2/v2.0/token")[-1].form()
    assert grant["grant_type"] == "authorization_code" and grant["code_verifier"]
    # The functions (and the command line) now work with the stored token.
    assert cli.run("upgrade", str(uuid.uuid4())).code == 0


def test_consent_stores_the_refresh_token_in_key_vault(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, key_vault: Any
) -> None:
    from tests.harness import use_key_vault

    use_key_vault(monkeypatch, key_vault.url)
    before = key_vault.get_value("partner-center-refresh-token")

    proc = cli.spawn("consent", "--no-browser", "--port", "0")
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    stored = key_vault.get_value("partner-center-refresh-token")
    assert stored != before and stored == cli.entra.current_refresh_token
    assert stored not in stdout + stderr
    assert "Key Vault secret partner-center-refresh-token" in stdout


def test_consent_refused_in_the_browser_exits_3(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.entra.sign_in_error = "access_denied"

    proc = cli.spawn("consent", "--no-browser", "--port", "0")
    page = _sign_in(proc)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 3
    assert "Consent not given" in page.text and "access_denied" in stderr
    assert not (cli.folder / "local.settings.json").exists()


def test_entra_authorize_refuses_unregistered_redirects_and_spent_codes(entra: FakeEntra) -> None:
    base = f"{entra.url}/{TENANT_ID}/oauth2/v2.0"
    params = {"client_id": APP_ID, "response_type": "code", "scope": "openid", "state": "s"}
    wrong = requests.get(f"{base}/authorize", params={**params, "redirect_uri": "https://evil.example"}, timeout=10)
    assert wrong.status_code == 400 and "AADSTS50011" in wrong.text
    ok = requests.get(
        f"{base}/authorize",
        params={**params, "redirect_uri": "http://localhost:1234"},
        allow_redirects=False,
        timeout=10,
    )
    code = ok.headers["Location"].split("code=")[1].split("&")[0]
    form = {
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "scope": "https://api.partnercenter.microsoft.com/user_impersonation openid",
        "redirect_uri": "http://localhost:1234",
    }
    first = requests.post(f"{base}/token", data=form, timeout=10)
    again = requests.post(f"{base}/token", data=form, timeout=10)
    assert first.status_code == 200 and "id_token" in first.json() and "refresh_token" in first.json()
    assert again.status_code == 400 and again.json()["error_codes"] == [54005]


# -- with storage: the queue function and the ledger ---------------------------------------------------------


class BackgroundHost:
    """tests/harness.py's Host (the Functions host's queue loop over Azurite) on a thread, while the command
    line runs; it also plays the consumer of the results and outcomes queues."""

    def __init__(self) -> None:
        self.host = Host(os.environ[STORAGE_SETTING])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def __enter__(self) -> Host:
        self._thread.start()
        return self.host

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _pump(self) -> None:
        while not self._stop.is_set():
            if not self.host.run_once():
                self._stop.wait(0.2)


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
    assert body["counts"] == {"running": 1, "completed": 8, "failed": 3, "expired": 0}
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
