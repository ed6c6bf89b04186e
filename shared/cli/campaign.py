"""A campaign's CSV in, its report CSV out: reading, validating every row first, resuming from a report.

Each row's request id (the ``MS-RequestId``) is fixed by the row itself: its ``requestId`` column, else
(campaign, customer id, product family). Running the same campaign again therefore sends the same ids, and
Partner Center and the ledger answer a repeat with the upgrade already made.

The campaign recorded in the ledger is ``--campaign``, else the CSV's file name without its extension (none when
that is not a campaign name, as ``discover`` does with its output's name); the request ids keep what they were
derived from before campaigns were recorded (``--campaign``, else the file name with its extension), so a report
written then resumes with the same ids.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ProductUpgradeError, ValidationError
from shared.models import Campaign as CampaignName
from shared.models import ProductUpgradeRequest, parse_guid, parse_product_family
from shared.upgrades.campaigns import parse_campaign
from shared.upgrades.workflow import request_id_for

from .csv_safety import SafeDictWriter, read_cell, read_row

CUSTOMER_COLUMN = "customerId"
PRODUCT_FAMILY_COLUMN = "productFamily"
REQUEST_ID_COLUMN = "requestId"

#: Columns the report adds after the input's own; ``WAIT_COLUMNS`` too with ``--wait``.
REPORT_COLUMNS = ("status", "upgradeId", "errorCode", "partnerCenterErrorCode", "message")
WAIT_COLUMNS = ("outcome", "partnerCenterStatus")

#: The request key space of queue messages: a row sent directly or through the queue gets the same MS-RequestId.
REQUEST_ID_KIND = "queue-request"

_MAX_REQUEST_ID = 256


class CampaignFileError(Exception):
    """The CSV cannot be used at all (missing, unreadable, empty, no customerId column): exit 2."""


@dataclass
class Row:
    """One data row of the CSV, validated."""

    number: int  # 1-based, as a spreadsheet shows data rows
    values: dict[str, str]
    request: ProductUpgradeRequest | None = None
    key: str | None = None
    error: str | None = None
    duplicate_of: int | None = None

    @property
    def request_id(self) -> str:
        assert self.key is not None
        return request_id_for(REQUEST_ID_KIND, self.key)

    @property
    def identity(self) -> tuple[str, str] | None:
        return (self.request.customer_id, self.request.product_family.lower()) if self.request else None


@dataclass
class Result:
    """What happened to a row: the report's added columns."""

    status: str
    upgrade_id: str | None = None
    error_code: str | None = None
    partner_center_error_code: str | None = None
    message: str | None = None
    outcome: str | None = None
    partner_center_status: str | None = None

    def columns(self) -> dict[str, str]:
        return {
            "status": self.status,
            "upgradeId": self.upgrade_id or "",
            "errorCode": self.error_code or "",
            "partnerCenterErrorCode": self.partner_center_error_code or "",
            "message": self.message or "",
            "outcome": self.outcome or "",
            "partnerCenterStatus": self.partner_center_status or "",
        }

    @classmethod
    def from_columns(cls, columns: dict[str, str]) -> Result:
        def get(name: str) -> str | None:
            return (columns.get(name) or "").strip() or None

        return cls(
            status=get("status") or "",
            upgrade_id=get("upgradeId"),
            error_code=get("errorCode"),
            partner_center_error_code=get("partnerCenterErrorCode"),
            message=get("message"),
            outcome=get("outcome"),
            partner_center_status=get("partnerCenterStatus"),
        )

    @classmethod
    def refused(cls, exc: ProductUpgradeError) -> Result:
        """A row Partner Center (or the way to it) did not take: ``failed`` when worth a retry, else ``rejected``."""
        return cls(
            exc.ending,
            error_code=exc.code,
            partner_center_error_code=exc.partner_center_error_code,
            message=exc.message,
        )

    def ended(self, outcome: str, partner_center_status: str | None, message: str | None = None) -> Result:
        """This accepted row with its upgrade's outcome filled in."""
        return dataclasses.replace(
            self, outcome=outcome, partner_center_status=partner_center_status, message=message or self.message
        )


@dataclass
class Campaign:
    name: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    #: The campaign recorded on the ledger's records and counted; None when the CSV's name is not a campaign name.
    recorded: CampaignName | None = None


def campaign_name(path: Path, name: str | None) -> CampaignName | None:
    """``--campaign`` as the naming rules allow it (else :class:`CampaignFileError`); without it, the CSV's file
    name without its extension when that is a campaign name, else None (nothing recorded)."""
    if name is None:
        try:
            return parse_campaign(path.stem)
        except ValidationError:
            return None
    try:
        return parse_campaign(name, "--campaign")
    except ValidationError as exc:
        raise CampaignFileError(exc.message) from None


def read_campaign(path: Path, name: str | None) -> Campaign:
    """Read and validate every row; a bad row is kept with its ``error``, a repeat with ``duplicate_of``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            raw_rows = [row for row in reader if any((value or "").strip() for value in _values(row))]
    except FileNotFoundError:
        raise CampaignFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CampaignFileError(f"{path} could not be read as UTF-8 CSV ({type(exc).__name__})") from None
    if not columns:
        raise CampaignFileError(f"{path} is empty: it needs a header row with {CUSTOMER_COLUMN} and data rows")
    lookup = {column.strip().lower(): column for column in columns if column}
    customer_column = lookup.get(CUSTOMER_COLUMN.lower())
    if customer_column is None:
        raise CampaignFileError(f"{path} has no {CUSTOMER_COLUMN} column (header: {', '.join(columns)})")
    if not raw_rows:
        raise CampaignFileError(f"{path} has a header but no data rows")
    family_column = lookup.get(PRODUCT_FAMILY_COLUMN.lower())
    request_column = lookup.get(REQUEST_ID_COLUMN.lower())
    recorded = campaign_name(path, name)
    key_prefix = name or path.name  # what request ids were derived from before campaigns were recorded
    display = recorded.name if recorded else path.stem
    campaign = Campaign(name=display, columns=[c for c in columns if c], recorded=recorded)
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(raw_rows, start=1):
        values = {column: (raw.get(column) or "") for column in campaign.columns}
        row = Row(number, values)
        try:
            customer = parse_guid(values[customer_column], CUSTOMER_COLUMN)
            family = _family(values, family_column)
            request_key = (values.get(request_column) or "").strip() if request_column else ""
            if len(request_key) > _MAX_REQUEST_ID:
                raise ValidationError(f"{REQUEST_ID_COLUMN} must be at most {_MAX_REQUEST_ID} characters")
        except ValidationError as exc:
            row.error = exc.message
            campaign.rows.append(row)
            continue
        row.request = ProductUpgradeRequest(customer, family)
        row.key = request_key or f"{key_prefix}:{customer}:{family.lower()}"
        identity = row.identity
        assert identity is not None
        if identity in seen:
            row.duplicate_of = seen[identity]
        else:
            seen[identity] = number
        campaign.rows.append(row)
    return campaign


def _family(values: dict[str, str], column: str | None) -> str:
    """The row's product family: its column when given and not blank, else the default (Azure)."""
    text = (values.get(column) or "").strip() if column else ""
    return parse_product_family(text or None)


def _values(row: dict[str | None, object]) -> Iterable[str]:
    for key, value in row.items():
        if key is not None and isinstance(value, str):
            yield value


def read_previous_report(path: Path) -> dict[tuple[str, str], Result]:
    """Rows a previous run of this report got ``accepted``, by (customer id, product family); the last line
    of a row wins (a row is appended again when its outcome arrives)."""
    accepted: dict[tuple[str, str], Result] = {}
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            lookup = {
                read_cell(column).strip().lower(): read_cell(column) for column in reader.fieldnames or [] if column
            }
            customer_column = lookup.get(CUSTOMER_COLUMN.lower())
            family_column = lookup.get(PRODUCT_FAMILY_COLUMN.lower())
            if customer_column is None or "status" not in lookup:
                return {}
            for written in reader:
                raw = read_row(written)  # undo what the report's writer added against formula injection
                try:
                    customer = parse_guid(raw.get(customer_column), CUSTOMER_COLUMN)
                    family = parse_product_family(
                        (raw.get(family_column) or "").strip() or None if family_column else None
                    )
                except ValidationError:
                    continue
                result = Result.from_columns(raw)
                if result.status == "accepted" and result.upgrade_id:
                    accepted[(customer, family.lower())] = result
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CampaignFileError(f"{path} (the report to resume) could not be read ({type(exc).__name__})") from None
    return accepted


class ReportWriter:
    """Appends a line as each row finishes (an interrupted run leaves a valid CSV), then writes the whole
    report in the CSV's order at the end, one line per row. Cells a spreadsheet would run as formulas are
    written as text (``csv_safety``); :func:`read_previous_report` reads them back as they were."""

    def __init__(self, path: Path, campaign: Campaign, *, wait: bool) -> None:
        self.path = path
        self._campaign = campaign
        self._fieldnames = [*campaign.columns, *REPORT_COLUMNS, *(WAIT_COLUMNS if wait else ())]
        self._lock = threading.Lock()
        self.results: dict[int, Result] = {}

    def start(self, kept: dict[int, Result]) -> None:
        """Begin the report with the rows kept from a previous run (written at once, atomically)."""
        with self._lock:
            self.results = dict(kept)
            self._rewrite(sorted(kept))

    def write(self, row: Row, result: Result) -> None:
        with self._lock:
            self.results[row.number] = result
            with open(self.path, "a", encoding="utf-8", newline="") as handle:
                SafeDictWriter(handle, self._fieldnames).writerow(self._line(row, result))

    def summary_line(self, rows: int) -> str:
        return f"report: {self.path} ({len(self.results)} of {rows} rows)"

    def finish(self) -> None:
        """The whole report, one line per finished row, in the CSV's order."""
        with self._lock:
            self._rewrite(sorted(self.results))

    def _rewrite(self, numbers: Sequence[int]) -> None:
        by_number = {row.number: row for row in self._campaign.rows}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = SafeDictWriter(handle, self._fieldnames)
            writer.writeheader()
            for number in numbers:
                writer.writerow(self._line(by_number[number], self.results[number]))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @staticmethod
    def _line(row: Row, result: Result) -> dict[str, str]:
        return {**row.values, **result.columns()}
