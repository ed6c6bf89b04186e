"""The files of a ``discover`` run: the candidates CSV, which ``bulk`` takes as it is, and its journal.

The CSV has one row per customer to upgrade, written as each is found (an interrupted run leaves a valid file).
Beside it, ``OUT.csv.progress.jsonl`` notes every customer looked at, written or not, so that a run started again
with the same ``--output`` asks Partner Center about none of them again: a customer is done when its row is in the
CSV, or when the journal says it is not one to write (no legacy Azure; suspended only without
``--include-suspended``). Deleting a row from the CSV (an unreadable customer, say) has it asked again.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shared.models import Customer
from shared.upgrades.discovery import KEPT, NEEDS_ACTION_ALL_SUSPENDED, SUSPENDED_ONLY, Candidacy

from .csv_safety import safe_row

CUSTOMER_COLUMN = "customerId"
BASE_COLUMNS = (CUSTOMER_COLUMN, "companyName", "domain", "legacySubscriptions", "needsAction")
ELIGIBILITY_COLUMN = "isEligible"
REASON_COLUMN = "reason"
JOURNAL_SUFFIX = ".progress.jsonl"

#: A customer whose subscriptions could not be read: written (never left out), with the reason.
UNREADABLE = "unreadable"


class CandidatesFileError(Exception):
    """The output exists but cannot be resumed (not ours, or written with other options): exit 2."""


def columns_for(check_eligibility: bool) -> list[str]:
    return [*BASE_COLUMNS, *([ELIGIBILITY_COLUMN] if check_eligibility else []), REASON_COLUMN]


@dataclass
class Finding:
    """What one customer came to."""

    customer: Customer
    #: ``kept``, ``suspendedOnly``, ``notLegacy`` or ``unreadable``.
    verdict: str
    candidacy: Candidacy | None = None
    is_eligible: bool | None = None
    #: Why the subscriptions could not be read, eligibility's own reason, or why eligibility could not be asked.
    reason: str | None = None
    eligibility_failed: bool = False

    def written(self, include_suspended: bool) -> bool:
        if self.candidacy is None:
            return self.verdict == UNREADABLE
        return self.candidacy.written(include_suspended=include_suspended)

    def row(self) -> dict[str, str]:
        profile = self.customer.company_profile
        return safe_row(
            {
                CUSTOMER_COLUMN: self.customer.id,
                "companyName": profile.company_name or "",
                "domain": profile.domain or "",
                "legacySubscriptions": "" if self.candidacy is None else str(self.candidacy.legacy_subscriptions),
                "needsAction": (self.candidacy.needs_action if self.candidacy else None) or "",
                ELIGIBILITY_COLUMN: "" if self.is_eligible is None else str(self.is_eligible).lower(),
                REASON_COLUMN: self.reason or "",
            }
        )

    def journal(self) -> dict[str, Any]:
        return {
            CUSTOMER_COLUMN: self.customer.id,
            "verdict": self.verdict,
            "isEligible": self.is_eligible,
            "eligibilityFailed": self.eligibility_failed,
        }


@dataclass
class Previous:
    """What earlier runs of the same output did."""

    #: Lower-case ids of the customers not to ask again.
    done: set[str] = field(default_factory=set)
    verdicts: Counter[str] = field(default_factory=Counter)
    eligible: int = 0
    eligibility_failed: int = 0
    rows: list[dict[str, str]] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)


class CandidatesFile:
    """The CSV and its journal: read what an earlier run left, then append as customers are found."""

    def __init__(self, path: Path, *, check_eligibility: bool, include_suspended: bool) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + JOURNAL_SUFFIX)
        self.columns = columns_for(check_eligibility)
        self.options = {"checkEligibility": check_eligibility, "includeSuspended": include_suspended}
        self.include_suspended = include_suspended
        self.rows_written = 0
        self._csv: IO[str] | None = None
        self._journal: IO[str] | None = None

    # -- resuming --------------------------------------------------------------------------------------
    def read_previous(self) -> Previous:
        """The customers done by earlier runs; raises :class:`CandidatesFileError` for a file that is not ours."""
        rows = self._read_rows()
        if not rows and not self._has_content(self.path):
            return Previous()  # no CSV: nothing was written, whatever a journal says
        notes = self._read_journal()
        previous = Previous(rows=rows)
        for row in rows:
            key = row[CUSTOMER_COLUMN].lower()
            note = notes.get(key) or _note_from_row(row)
            previous.done.add(key)
            previous.journal.append(note)
        for key, note in notes.items():
            if key not in previous.done and note["verdict"] not in self._written_verdicts():
                previous.done.add(key)
                previous.journal.append(note)
        for note in previous.journal:
            previous.verdicts[note["verdict"]] += 1
            previous.eligible += note.get("isEligible") is True
            previous.eligibility_failed += bool(note.get("eligibilityFailed"))
        return previous

    def _written_verdicts(self) -> set[str]:
        return {KEPT, UNREADABLE} | ({SUSPENDED_ONLY} if self.include_suspended else set())

    @staticmethod
    def _has_content(path: Path) -> bool:
        return path.exists() and path.stat().st_size > 0

    def _read_rows(self) -> list[dict[str, str]]:
        if not self._has_content(self.path):
            return []
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                header = list(reader.fieldnames or [])
                if header != self.columns:
                    raise CandidatesFileError(
                        f"{self.path} exists with the columns {', '.join(header)}; a discover run with these options "
                        f"writes {', '.join(self.columns)}. Run with the options it was written with, or choose "
                        "another --output"
                    )
                rows: dict[str, dict[str, str]] = {}
                for raw in reader:
                    row = {column: raw.get(column) or "" for column in self.columns}
                    if row[CUSTOMER_COLUMN].strip() and None not in raw:
                        rows.setdefault(row[CUSTOMER_COLUMN].lower(), row)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise CandidatesFileError(
                f"{self.path} (the output to resume) could not be read ({type(exc).__name__})"
            ) from None
        return list(rows.values())

    def _read_journal(self) -> dict[str, dict[str, Any]]:
        """The journal's notes by lower-case customer id (the last note of a customer wins); a torn last line is
        left out. A journal written with other options is refused."""
        notes: dict[str, dict[str, Any]] = {}
        try:
            lines = self.journal_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return notes
        except (OSError, UnicodeDecodeError) as exc:
            raise CandidatesFileError(f"{self.journal_path} could not be read ({type(exc).__name__})") from None
        for line in lines:
            try:
                note = json.loads(line)
            except ValueError:
                continue
            if isinstance(note, dict) and isinstance(note.get("discover"), dict):
                if note["discover"] != self.options:
                    raise CandidatesFileError(
                        f"{self.path} was written by a discover run with other options ({_options(note['discover'])}); "
                        "run with those, or choose another --output"
                    )
            elif isinstance(note, dict) and isinstance(note.get(CUSTOMER_COLUMN), str) and note.get("verdict"):
                notes[note[CUSTOMER_COLUMN].lower()] = note
        return notes

    # -- writing ---------------------------------------------------------------------------------------
    def start(self, previous: Previous) -> None:
        """Write the earlier runs' rows and notes back (whole, atomically), then keep both files open to append."""
        _replace(self.path, lambda handle: _write_csv(handle, self.columns, previous.rows))
        self.rows_written = len(previous.rows)

        def journal(handle: IO[str]) -> None:
            for note in [{"discover": self.options}, *previous.journal]:
                handle.write(json.dumps(note) + "\n")

        _replace(self.journal_path, journal)
        self._csv = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def record(self, finding: Finding) -> bool:
        """The customer's row (when it is one to write), then its note; True when a row was written. Each line is
        flushed as it is written: a run stopped at any point leaves both files whole up to their last line."""
        assert self._csv is not None and self._journal is not None
        written = finding.written(self.include_suspended)
        if written:
            row = finding.row()
            csv.DictWriter(self._csv, self.columns, extrasaction="ignore").writerow(row)
            self._csv.flush()
            self.rows_written += 1
        self._journal.write(json.dumps(finding.journal()) + "\n")
        self._journal.flush()
        return written

    def close(self) -> None:
        for handle in (self._csv, self._journal):
            if handle is not None:
                handle.close()
        self._csv = self._journal = None


def _note_from_row(row: dict[str, str]) -> dict[str, Any]:
    """A note for a CSV row the journal does not know (its line was never written)."""
    if not row["legacySubscriptions"].strip():
        verdict = UNREADABLE
    elif row["needsAction"] == NEEDS_ACTION_ALL_SUSPENDED:
        verdict = SUSPENDED_ONLY
    else:
        verdict = KEPT
    eligible = row.get(ELIGIBILITY_COLUMN, "").strip().lower()
    return {
        CUSTOMER_COLUMN: row[CUSTOMER_COLUMN],
        "verdict": verdict,
        "isEligible": {"true": True, "false": False}.get(eligible),
        "eligibilityFailed": verdict != UNREADABLE and ELIGIBILITY_COLUMN in row and not eligible,
    }


def _options(options: dict[str, Any]) -> str:
    names = (("check-eligibility", "checkEligibility"), ("include-suspended", "includeSuspended"))
    flags = [f"--{name}" for name, key in names if options.get(key)]
    return " ".join(flags) or "neither --check-eligibility nor --include-suspended"


def _write_csv(handle: IO[str], columns: list[str], rows: list[dict[str, str]]) -> None:
    writer = csv.DictWriter(handle, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _replace(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Write ``path`` whole through a temporary file: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
