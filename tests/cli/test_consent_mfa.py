"""``consent`` says whether the sign-in behind the new token used MFA (the access token's ``amr`` claim)."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import Cli, _sign_in, cli  # noqa: F401 - the fixture, used by name

# The consent test's own setup: the first consent, with no refresh token yet.


@pytest.fixture
def first_consent(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:  # noqa: F811 - the fixture above
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")
    return cli


def test_consent_says_the_sign_in_used_mfa(first_consent: Cli) -> None:
    proc = first_consent.spawn("consent", "--no-browser", "--port", "0", "--json")
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["mfa"] is True
    assert "MFA" not in stderr


def test_consent_warns_when_the_sign_in_did_not_use_mfa(first_consent: Cli) -> None:
    first_consent.entra.sign_in_methods = ("pwd",)
    proc = first_consent.spawn("consent", "--no-browser", "--port", "0")
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr  # stored all the same: it works until Partner Center enforces MFA
    assert "carries no MFA claim" in stderr and "sign in with multi-factor authentication" in stderr
    assert "used multi-factor authentication" not in stdout
