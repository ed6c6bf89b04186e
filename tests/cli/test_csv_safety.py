"""CSV cells from Partner Center never become spreadsheet formulas."""

from __future__ import annotations

import pytest

from shared.cli.csv_safety import safe_cell, safe_row


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
