"""``list``: counts by state, then the ledger's upgrades (every page); as CSV, or as a one-page HTML report.

With ``--campaign``: the campaign's summary first (from the counts kept per campaign, as the summary route
answers it), its upgrades only, and ``--html`` writes the campaign's own report (:mod:`shared.cli.campaign_report`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.errors import MissingSettingError, ValidationError
from shared.models import Campaign
from shared.settings import STORAGE_SETTING
from shared.store.ledger import MAX_PAGE_SIZE, NoLedger
from shared.store.records import UPGRADE_STATES, UpgradeRecord, utc_now
from shared.upgrades import campaigns
from shared.upgrades.campaigns import parse_campaign

from . import campaign_report
from .context import EXIT_OK, Context, Output, UsageError, parse_customer
from .csv_safety import SafeDictWriter
from .html_report import write_html_report

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The CSV's columns: the keys of the list route's item, in its order.
CSV_COLUMNS = tuple(UpgradeRecord("", "", "", "running", "", _EPOCH, _EPOCH).to_json())
#: The columns of the human listing.
SHOWN_COLUMNS = ("upgradeId", "customerId", "state", "partnerCenterStatus", "acceptedAt", "endedAt")


def run_list(context: Context, args: argparse.Namespace) -> int:
    customer = parse_customer(args.customer) if args.customer else None
    campaign = _campaign(args.campaign)
    records = all_upgrades(
        context, state=args.state, customer_id=customer, campaign_key=campaign.key if campaign else None
    )
    counts = count_states(records)
    output = context.output
    summary = campaign_summary(context, campaign.key) if campaign else None
    if args.output:
        write_csv(Path(args.output), records)
    if args.html and campaign:
        requests = context.runtime.ledger.campaign_requests(campaign.key)
        # The kept counts are checked against the records only when the listing is the whole campaign.
        whole = args.state is None and customer is None
        html = campaign_report.render(
            summary["campaign"] if summary else campaign.name,
            records,
            requests,
            summary,
            now=utc_now(),
            scanned=counts if whole else None,
        )
        Path(args.html).write_text(html, encoding="utf-8")
    elif args.html:
        write_html_report(Path(args.html), records, title=_title(args.state, customer))
    if not output.as_json:
        _print(output, counts, records, summary)
        for what, path in (("CSV", args.output), ("HTML report", args.html)):
            if path:
                output.say(f"{what}: {path}")
    output.document({"counts": counts, "items": [record.to_json() for record in records]})
    return EXIT_OK


def campaign_summary(context: Context, campaign_key: str) -> dict[str, Any] | None:
    """The summary route's document for the campaign, from the same kept counts; None when none was counted."""
    counts = context.runtime.ledger.campaign_counts(campaign_key)
    return campaigns.summary(counts, utc_now()) if counts is not None else None


def _print(
    output: Output, counts: dict[str, int], records: list[UpgradeRecord], summary: dict[str, Any] | None
) -> None:
    # Ids are read whole: a terminal's own width, else wide enough for every column.
    console = Console(file=output.stdout)
    if not console.is_terminal:
        console = Console(file=output.stdout, width=220)
    if summary is not None:
        table = Table(title=f"Campaign {summary['campaign']}", title_justify="left")
        table.add_column("")
        table.add_column("", justify="right")
        table.add_row("upgrades", str(summary["upgrades"]))
        for state, n in summary["counts"].items():
            table.add_row(state, str(n))
        for key in ("firstAcceptedAt", "lastEndedAt", "medianMinutesToEnd", "estimatedEndAt"):
            table.add_row(key, "" if summary[key] is None else str(summary[key]))
        console.print(table)
    by_state = Table(title="Upgrades by state", title_justify="left")
    by_state.add_column("state")
    by_state.add_column("upgrades", justify="right")
    for state, n in counts.items():
        by_state.add_row(state, str(n))
    by_state.add_row("total", str(len(records)), style="bold")
    console.print(by_state)
    listing = Table(title="Upgrades", title_justify="left")
    for column in SHOWN_COLUMNS:
        listing.add_column(column, no_wrap=True)
    for record in records:
        item = record.to_json()
        listing.add_row(*(str(item[key] or "") for key in SHOWN_COLUMNS))
    console.print(listing)


def _campaign(name: str | None) -> Campaign | None:
    if name is None:
        return None
    try:
        return parse_campaign(name, "--campaign")
    except ValidationError as exc:
        raise UsageError(exc.message) from None


def all_upgrades(
    context: Context, *, state: str | None, customer_id: str | None, campaign_key: str | None = None
) -> list[UpgradeRecord]:
    """Every matching upgrade, following the continuation token until it is None."""
    ledger = context.runtime.ledger
    if isinstance(ledger, NoLedger):
        raise MissingSettingError(STORAGE_SETTING)
    records: list[UpgradeRecord] = []
    token: str | None = None
    while True:
        page = ledger.list_upgrades(
            state=state, customer_id=customer_id, campaign_key=campaign_key, top=MAX_PAGE_SIZE, continuation_token=token
        )
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
