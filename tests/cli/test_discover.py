"""``discover``: the customers still on legacy Azure, counted against the sandbox population's own truth."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from sandbox.customers import TRY_LATER_DESCRIPTION
from sandbox.population import FORMULA_NAMES, QUOTED_NAME, SUSPENDED_REASON, Population
from shared.cli.campaign import read_campaign
from shared.upgrades.discovery import NEEDS_ACTION_ALL_SUSPENDED, NEEDS_ACTION_SUSPENDED
from tests.cli.helpers import Cli, read_report, write_csv

COLUMNS = ["customerId", "companyName", "domain", "legacySubscriptions", "needsAction", "reason"]
FAIL_ONCE = ("fail_once_503", "fail_once_429")


def populated(cli: Cli, size: int = 1000, **options: object) -> Population:
    population = Population.build(size, **options)  # type: ignore[arg-type]
    population.install(cli.partner_center)
    return population


def subscription_reads(cli: Cli) -> Counter[str]:
    """Subscriptions calls that reached the fake, by customer id."""
    per_path = cli.partner_center.requests_per_path
    return Counter({path.split("/")[3]: n for path, n in per_path.items() if path.endswith("/subscriptions")})


def once_each(population: Population) -> Counter[str]:
    """Every customer's subscriptions asked once; those failing once, once more by the retry policy."""
    return Counter({c.customer_id: 2 if c.fault in FAIL_ONCE else 1 for c in population.customers})


def expected_counts(population: Population, seen: int | None = None, eligible: int | None = None) -> dict:
    truth = population.counts()
    return {
        "seen": len(population.customers) if seen is None else seen,
        "kept": truth["kept"],
        "suspendedOnly": truth["suspendedOnly"],
        "notLegacy": truth["notLegacy"],
        "eligible": eligible,
        "unreadable": truth["unreadable"],
    }


def test_discover_keeps_exactly_the_populations_legacy_customers_in_a_csv_bulk_takes(cli: Cli) -> None:
    population = populated(cli)

    ran = cli.run("discover", "--output", "wave-1.csv", "--json")

    assert ran.code == 1, ran.stderr  # five customers could not be read: written, and the run says so
    body = ran.json()
    assert body["counts"] == expected_counts(population)
    assert body["rows"] == len(population.kept) + len(population.ids("unreadable"))
    assert (body["campaign"], body["output"], body["throttled"]) == ("wave-1", "wave-1.csv", 5)
    rows = read_report(cli.folder / "wave-1.csv")
    assert list(rows[0]) == COLUMNS
    by_id = {row["customerId"]: row for row in rows}
    assert len(by_id) == len(rows) and set(by_id) == population.kept | population.ids("unreadable")
    truth = population.by_id()
    for customer_id in population.kept:
        row = by_id[customer_id]
        assert row["legacySubscriptions"] == str(truth[customer_id].legacy_active) and row["reason"] == ""
        needs = NEEDS_ACTION_SUSPENDED if customer_id in population.needs_action else ""
        assert row["needsAction"] == needs
        assert row["domain"] == truth[customer_id].domain
    for customer_id in population.ids("unreadable"):
        row = by_id[customer_id]
        assert row["legacySubscriptions"] == "" and row["companyName"] == truth[customer_id].company_name
        assert row["reason"].startswith("subscriptions could not be read: Partner Center answered 403 with error 20002")
    # Company names that a spreadsheet would run are written as text; the others as they are.
    names = {row["companyName"] for row in rows}
    assert {"'" + name for name in FORMULA_NAMES} <= names and QUOTED_NAME in names
    assert not [name for name in names if name.startswith(("=", "+", "-", "@", "\t", "\r"))]
    # bulk takes the file as it is: every row valid, none repeated, the same customers.
    campaign = read_campaign(cli.folder / "wave-1.csv", None)
    assert [(row.error, row.duplicate_of) for row in campaign.rows] == [(None, None)] * len(rows)
    assert {row.request.customer_id for row in campaign.rows if row.request} == set(by_id)
    # Every customer asked once (a failure retried by the policy), the customer list read to its last page.
    assert subscription_reads(cli) == once_each(population)
    assert cli.partner_center.requests_per_path["/v1/customers"] == 2
    assert cli.entra.token_requests == 1


def test_discovery_interrupted_at_40_percent_goes_on_and_asks_no_customer_twice(cli: Cli) -> None:
    population = populated(cli)
    cli.partner_center.service_time(0.01)

    proc = cli.spawn("discover", "--output", "wave-1.csv", "--json")
    deadline = time.monotonic() + 120
    while sum(subscription_reads(cli).values()) < 400 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    first = json.loads(stdout)
    assert first["interrupted"] is True and "run again" in stderr
    done = sum(v for k, v in first["counts"].items() if k not in ("seen", "eligible") and v)
    asked_before = set(subscription_reads(cli))
    assert done == len(asked_before)  # every customer asked was written: the calls in flight finished
    assert 0.38 <= done / 1000 < 0.6  # stopped near 40 %
    journal = (cli.folder / "wave-1.csv.progress.jsonl").read_text().splitlines()
    assert len(journal) == 1 + done  # the options, then one note per customer looked at
    interrupted_rows = read_report(cli.folder / "wave-1.csv")
    assert len(interrupted_rows) == first["rows"] == first["counts"]["kept"] + first["counts"]["unreadable"]
    assert all(row.error is None for row in read_campaign(cli.folder / "wave-1.csv", None).rows)

    ran = cli.run("discover", "--output", "wave-1.csv", "--json")

    assert ran.code == 1, ran.stderr
    assert ran.json()["counts"] == expected_counts(population)
    rows = read_report(cli.folder / "wave-1.csv")
    assert rows[: len(interrupted_rows)] == interrupted_rows  # the first run's rows kept as they were
    assert {row["customerId"] for row in rows} == population.kept | population.ids("unreadable")
    assert len(rows) == len({row["customerId"] for row in rows})
    # Counted at the fake: no customer's subscriptions were asked for twice across the two runs.
    assert subscription_reads(cli) == once_each(population)
    assert cli.partner_center.requests_per_path["/v1/customers"] == 4  # the list is read again: two pages a run


def test_a_second_interrupt_stops_at_once_and_the_next_run_asks_the_customers_in_flight(cli: Cli) -> None:
    population = populated(cli, 30, scripted=False)
    cli.partner_center.service_time(5.0)  # every call in flight for five seconds

    proc = cli.spawn("discover", "--output", "c.csv", "--json", "--concurrency", "4")
    deadline = time.monotonic() + 60
    while cli.partner_center.in_flight < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert time.monotonic() - stopped_at < 4.0  # not waiting out the five seconds of the calls in flight
    assert "finishing the 4 calls in flight" in stderr and "stopping now" in stderr
    assert json.loads(stdout)["counts"]["seen"] == 30
    journal = (cli.folder / "c.csv.progress.jsonl").read_text().splitlines()
    assert len(journal) == 1  # the options only: the four in flight were not taken for read
    cli.partner_center.service_time(0.0)

    ran = cli.run("discover", "--output", "c.csv", "--json")

    assert ran.code == 0 and ran.json()["counts"] == expected_counts(population)
    reads = subscription_reads(cli)
    assert sorted(reads.values()) == [1] * 26 + [2] * 4  # only the four abandoned in flight were asked again


def test_every_customer_read_exits_0_and_says_what_to_run_next(cli: Cli) -> None:
    population = populated(cli, 40, scripted=False)
    assert not [c for c in population.customers if c.fault]

    ran = cli.run("discover", "--output", "spring 2027.csv")

    assert ran.code == 0, ran.stderr
    assert "seen" in ran.stdout and f"{len(population.kept)} rows" in ran.stdout
    assert "review the CSV, then: product-upgrades bulk 'spring 2027.csv'" in ran.stdout
    assert "--campaign 'spring 2027'" in ran.stdout
    assert "discover: 40/40 done" in ran.stderr  # the plain progress line (no terminal here)


def test_check_eligibility_writes_the_answer_and_its_reason_for_each_customer_written(cli: Cli) -> None:
    population = populated(cli, 60, scripted=False)
    try_later = sorted(population.kept - population.needs_action)[0]
    cli.partner_center.set_customer_error(try_later, 403, 900130, TRY_LATER_DESCRIPTION, operations=("eligibility",))

    ran = cli.run("discover", "--output", "c.csv", "--check-eligibility", "--json", "--campaign", "wave-2")

    assert ran.code == 1, ran.stderr  # one eligibility answer could not be had
    eligible = population.kept - population.needs_action - {try_later}
    assert ran.json()["counts"] == expected_counts(population, eligible=len(eligible))
    assert ran.json()["campaign"] == "wave-2"
    rows = {row["customerId"]: row for row in read_report(cli.folder / "c.csv")}
    assert list(next(iter(rows.values()))) == [*COLUMNS[:-1], "isEligible", "reason"]
    assert {c for c, row in rows.items() if row["isEligible"] == "true"} == eligible
    assert all(
        rows[c]["isEligible"] == "false" and rows[c]["reason"] == SUSPENDED_REASON for c in population.needs_action
    )
    assert rows[try_later]["isEligible"] == "" and "900130" in rows[try_later]["reason"]
    asked = Counter(r.json()["customerId"] for r in cli.partner_center.requests_to("/v1/productUpgrades/eligibility"))
    assert asked == Counter(list(rows))  # each customer written asked once, no one else


def test_include_suspended_writes_the_customers_whose_legacy_azure_is_all_suspended(cli: Cli) -> None:
    population = populated(cli, 60, scripted=False)
    suspended = population.ids("suspendedOnly")
    assert suspended

    ran = cli.run("discover", "--output", "c.csv", "--include-suspended", "--json")

    assert ran.code == 0 and ran.json()["counts"]["suspendedOnly"] == len(suspended)
    rows = {row["customerId"]: row for row in read_report(cli.folder / "c.csv")}
    assert set(rows) == population.kept | suspended
    assert all(
        rows[c]["needsAction"] == NEEDS_ACTION_ALL_SUSPENDED and rows[c]["legacySubscriptions"] == "0"
        for c in suspended
    )


def test_resuming_with_other_options_is_a_usage_error_and_leaves_the_output_alone(cli: Cli) -> None:
    populated(cli, 40, scripted=False)
    assert cli.run("discover", "--output", "c.csv").code == 0
    before = (cli.folder / "c.csv").read_bytes()
    asked = len(cli.partner_center.requests)

    for option in ("--check-eligibility", "--include-suspended"):
        ran = cli.run("discover", "--output", "c.csv", option)
        assert ran.code == 2 and "another --output" in ran.stderr, ran.stderr

    assert (cli.folder / "c.csv").read_bytes() == before and len(cli.partner_center.requests) == asked


def test_an_output_that_is_not_a_discover_csv_is_never_overwritten(cli: Cli) -> None:
    populated(cli, 10, scripted=False)
    path = write_csv(cli.folder / "report.csv", [{"customerId": "x", "status": "accepted"}])
    before = path.read_bytes()

    ran = cli.run("discover", "--output", "report.csv")

    assert ran.code == 2 and "choose another --output" in ran.stderr
    assert path.read_bytes() == before and cli.partner_center.requests == []


def test_bad_arguments_are_usage_errors_before_partner_center_is_asked(cli: Cli) -> None:
    populated(cli, 10, scripted=False)
    for campaign in ("-starts-with-a-dash", "x" * 65, "semi;colon", " "):
        ran = cli.run("discover", "--output", "c.csv", f"--campaign={campaign}")
        assert ran.code == 2 and "--campaign must be" in ran.stderr, campaign
    for args in (("--output", "c.csv", "--concurrency", "0"), ()):  # --output is required
        with pytest.raises(SystemExit) as exited:
            cli.run("discover", *args)
        assert exited.value.code == 2
    assert cli.partner_center.requests == [] and not (cli.folder / "c.csv").exists()


def test_an_output_that_cannot_be_written_is_a_usage_error_before_partner_center_is_asked(cli: Cli) -> None:
    populated(cli, 10, scripted=False)

    ran = cli.run("discover", "--output", "no-such-folder/c.csv")

    assert ran.code == 2 and "no-such-folder/c.csv cannot be written" in ran.stderr
    assert cli.partner_center.requests_per_path["/v1/customers"] == 0


def test_refused_credentials_exit_3_before_any_customer_is_asked(cli: Cli) -> None:
    populated(cli, 10, scripted=False)
    cli.entra.expire_refresh_tokens()

    ran = cli.run("discover", "--output", "c.csv")

    assert ran.code == 3 and "product-upgrades consent" in ran.stderr
    assert cli.partner_center.requests == [] and not (cli.folder / "c.csv").exists()


def test_our_token_refused_midway_stops_discovery_with_exit_3(cli: Cli) -> None:
    populated(cli, 20, scripted=False)
    cli.partner_center.fail_next(50, 401, {"code": "900420", "description": "Invalid Token"}, match="/subscriptions")

    ran = cli.run("discover", "--output", "c.csv", "--concurrency", "1")

    assert ran.code == 3 and "Partner Center answered 401" in ran.stderr
    assert sum(subscription_reads(cli).values()) == 2  # the first customer and its one retry with a fresh token
    assert read_report(cli.folder / "c.csv") == []  # nobody written unreadable for our own token's sake


def test_partner_center_out_of_reach_stops_the_run_and_the_next_run_asks_again(cli: Cli) -> None:
    population = populated(cli, 5, scripted=False)
    first = population.customers[0].customer_id
    cli.partner_center.reset_next(5, match="/subscriptions")  # every attempt of the first customer

    ran = cli.run("discover", "--output", "c.csv", "--concurrency", "1")

    assert ran.code == 4 and "Partner Center could not be reached" in ran.stderr and "run again" in ran.stderr
    assert "address: https://127.0.0.1" in ran.stderr  # the service named, with its address
    assert first not in (cli.folder / "c.csv.progress.jsonl").read_text()  # not taken for unreadable
    assert subscription_reads(cli) == Counter({first: 5})

    again = cli.run("discover", "--output", "c.csv", "--json")

    assert again.code == 0 and again.json()["counts"] == expected_counts(population)
    assert subscription_reads(cli) == Counter({c.customer_id: 1 for c in population.customers}) + Counter({first: 5})


def test_a_row_deleted_from_the_csv_is_asked_again(cli: Cli) -> None:
    population = populated(cli, 200)
    [unreadable] = population.ids("unreadable")
    assert cli.run("discover", "--output", "c.csv").code == 1
    path = cli.folder / "c.csv"
    path.write_text("".join(line for line in path.read_text().splitlines(True) if unreadable not in line))
    cli.partner_center.directory.clear_subscription_fault(unreadable)

    ran = cli.run("discover", "--output", "c.csv", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["counts"]["unreadable"] == 0
    assert subscription_reads(cli) == once_each(population) + Counter({unreadable: 1})
