"""The ``cli`` fixture: the command line with the app's settings pointing at the fakes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import FakeEntra, FakePartnerCenter
from tests.cli.helpers import Cli
from tests.harness import set_app_env


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, entra: FakeEntra, partner_center: FakePartnerCenter
) -> Iterator[Cli]:
    set_app_env(monkeypatch, entra, partner_center)
    monkeypatch.setenv("PRODUCT_UPGRADE_POLL_SECONDS", "0.1")
    yield Cli(tmp_path, entra, partner_center)
