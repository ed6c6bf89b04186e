"""``list``: counts by state, then the ledger's upgrades (every page); as CSV, or as a one-page HTML report."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from shared.errors import MissingSettingError
from shared.settings import STORAGE_SETTING
from shared.store.ledger import MAX_PAGE_SIZE, UPGRADE_STATES, NoLedger, UpgradeRecord

from .context import EXIT_OK, Context, parse_customer
from .csv_safety import SafeDictWriter
from .html_report import write_html_report

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The CSV's columns: the keys of the list route's item, in its order.
CSV_COLUMNS = tuple(UpgradeRecord("", "", "", "running", "", _EPOCH, _EPOCH).to_json())
#: The columns of the human listing.
SHOWN_COLUMNS = ("upgradeId", "customerId", "state", "partnerCenterStatus", "acceptedAt", "endedAt")


def run_list(context: Context, args: argparse.Namespace) -> int:
    customer = parse_customer(args.customer) if args.customer else None
    records = all_upgrades(context, state=args.state, customer_id=customer)
    counts = count_states(records)
    output = context.output
    if args.output:
        write_csv(Path(args.output), records)
    if args.html:
        write_html_report(Path(args.html), records, title=_title(args.state, customer))
    if not output.as_json:
        # Ids are read whole: a terminal's own width, else wide enough for every column.
        console = Console(file=output.stdout)
        if not console.is_terminal:
            console = Console(file=output.stdout, width=220)
        summary = Table(title="Upgrades by state", title_justify="left")
        summary.add_column("state")
        summary.add_column("upgrades", justify="right")
        for state, n in counts.items():
            summary.add_row(state, str(n))
        summary.add_row("total", str(len(records)), style="bold")
        console.print(summary)
        listing = Table(title="Upgrades", title_justify="left")
        for column in SHOWN_COLUMNS:
            listing.add_column(column, no_wrap=True)
        for record in records:
            item = record.to_json()
            listing.add_row(*(str(item[key] or "") for key in SHOWN_COLUMNS))
        console.print(listing)
        for what, path in (("CSV", args.output), ("HTML report", args.html)):
            if path:
                output.say(f"{what}: {path}")
    output.document({"counts": counts, "items": [record.to_json() for record in records]})
    return EXIT_OK


def all_upgrades(context: Context, *, state: str | None, customer_id: str | None) -> list[UpgradeRecord]:
    """Every matching upgrade, following the continuation token until it is None."""
    ledger = context.runtime.ledger
    if isinstance(ledger, NoLedger):
        raise MissingSettingError(STORAGE_SETTING)
    records: list[UpgradeRecord] = []
    token: str | None = None
    while True:
        page = ledger.list_upgrades(state=state, customer_id=customer_id, top=MAX_PAGE_SIZE, continuation_token=token)
        records.extend(page.items)
        token = page.continuation_token
        if token is None:
            return records


def count_states(records: list[UpgradeRecord]) -> dict[str, int]:
    """Every state, zero included, in the ledger's order."""
    counts = Counter(record.state for record in records)
    return {state: counts.get(state, 0) for state in UPGRADE_STATES}


def write_csv(path: Path, records: list[UpgradeRecord]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        # Caller-given ids (Idempotency-Key, MS-CorrelationId) and Partner Center's text: never a live formula.
        writer = SafeDictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(record.to_json() for record in records)


def _title(state: str | None, customer: str | None) -> str:
    parts = ["Product upgrades"]
    if state:
        parts.append(f"state {state}")
    if customer:
        parts.append(f"customer {customer}")
    return ", ".join(parts)
