"""CSV cells that a spreadsheet must show as text, never run as a formula (CSV injection).

A company name comes from Partner Center, typed by whoever created the customer: ``=HYPERLINK(...)`` opened in
Excel or Sheets would be a live formula. OWASP's rule: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return gets a leading ``'``, which spreadsheets read as "this is text" (and show without it).
"""

from __future__ import annotations

from collections.abc import Mapping

#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """``value`` as text a spreadsheet will not evaluate; unchanged when it cannot be a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def safe_row(row: Mapping[str, str]) -> dict[str, str]:
    """Every cell of a CSV row through :func:`safe_cell`."""
    return {column: safe_cell(value) for column, value in row.items()}
