"""``consent``: the secure app model's one-time sign-in, and where the refresh token is stored."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandbox import APP_ID, APP_SECRET, TENANT_ID, FakeEntra
from tests.cli.helpers import Cli

# -- consent -------------------------------------------------------------------------------------------------


def _sign_in(proc: subprocess.Popen[str]) -> requests.Response:
    """The browser's part: open the sign-in URL the command printed and follow Entra's redirect back to it."""
    assert proc.stderr is not None
    for _ in range(20):
        line = proc.stderr.readline()
        if line.startswith("https://"):
            return requests.get(line.strip(), timeout=10)
    raise AssertionError("the command printed no sign-in URL")


def test_consent_stores_the_refresh_token_in_local_settings_without_printing_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")  # the first consent: there is none yet
    (cli.folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {"Other": "kept"}}))

    settings = str(cli.folder / "local.settings.json")
    proc = cli.spawn("--settings", settings, "consent", "--no-browser", "--port", "0", "--json")
    page = _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    assert page.status_code == 200 and "Signed in" in page.text
    values = json.loads((cli.folder / "local.settings.json").read_text())["Values"]
    token = values["PARTNER_CENTER_REFRESH_TOKEN"]
    assert values["Other"] == "kept"
    assert token == cli.entra.current_refresh_token and token in cli.entra.valid_refresh_tokens
    assert token not in stdout and token not in stderr
    assert json.loads(stdout)["status"] == "stored"
    authorize = cli.entra.requests_to("/oauth2/v2.0/authorize")[0].query
    assert authorize["scope"].split()[0] == "https://api.partnercenter.microsoft.com/user_impersonation"
    assert authorize["code_challenge_method"] == "S256" and authorize["redirect_uri"].startswith("http://localhost:")
    grant = cli.entra.requests_to("/oauth2/v2.0/token")[-1].form()
    assert grant["grant_type"] == "authorization_code" and grant["code_verifier"]
    # The functions (and the command line) now work with the stored token.
    assert cli.run("--settings", settings, "upgrade", str(uuid.uuid4())).code == 0


def test_consent_stores_the_refresh_token_in_key_vault(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, key_vault: Any
) -> None:
    from tests.harness import use_key_vault

    use_key_vault(monkeypatch, key_vault.url)
    before = key_vault.get_value("partner-center-refresh-token")

    proc = cli.spawn("consent", "--no-browser", "--port", "0")
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    stored = key_vault.get_value("partner-center-refresh-token")
    assert stored != before and stored == cli.entra.current_refresh_token
    assert stored not in stdout + stderr
    assert "Key Vault secret partner-center-refresh-token" in stdout


def test_consent_refused_in_the_browser_exits_3(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.entra.sign_in_error = "access_denied"

    proc = cli.spawn("consent", "--no-browser", "--port", "0")
    page = _sign_in(proc)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 3
    assert "Consent not given" in page.text and "access_denied" in stderr
    assert not (cli.folder / "local.settings.json").exists()


def test_entra_authorize_refuses_unregistered_redirects_and_spent_codes(entra: FakeEntra) -> None:
    base = f"{entra.url}/{TENANT_ID}/oauth2/v2.0"
    params = {"client_id": APP_ID, "response_type": "code", "scope": "openid", "state": "s"}
    wrong = requests.get(f"{base}/authorize", params={**params, "redirect_uri": "https://evil.example"}, timeout=10)
    assert wrong.status_code == 400 and "AADSTS50011" in wrong.text
    ok = requests.get(
        f"{base}/authorize",
        params={**params, "redirect_uri": "http://localhost:1234"},
        allow_redirects=False,
        timeout=10,
    )
    code = ok.headers["Location"].split("code=")[1].split("&")[0]
    form = {
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "scope": "https://api.partnercenter.microsoft.com/user_impersonation openid",
        "redirect_uri": "http://localhost:1234",
    }
    first = requests.post(f"{base}/token", data=form, timeout=10)
    again = requests.post(f"{base}/token", data=form, timeout=10)
    assert first.status_code == 200 and "id_token" in first.json() and "refresh_token" in first.json()
    assert again.status_code == 400 and again.json()["error_codes"] == [54005]


# -- MFA: the access token's amr claim --------------------------------------------------------------


def test_consent_says_the_sign_in_used_mfa(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = spawn_consent(cli, monkeypatch, "--json")
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["mfa"] is True
    assert "MFA" not in stderr


def test_consent_warns_when_the_sign_in_did_not_use_mfa(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.entra.sign_in_methods = ("pwd",)
    proc = spawn_consent(cli, monkeypatch)
    _sign_in(proc)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr  # stored all the same: it works until Partner Center enforces MFA
    assert "carries no MFA claim" in stderr and "sign in with multi-factor authentication" in stderr
    assert "used multi-factor authentication" not in stdout


# -- the redirect receiver ----------------------------------------------------------------------------------


def sign_in_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for _ in range(20):
        line = proc.stderr.readline()
        if line.startswith("https://"):
            return line.strip()
    raise AssertionError("the command printed no sign-in URL")


def spawn_consent(cli: Cli, monkeypatch: pytest.MonkeyPatch, *options: str) -> subprocess.Popen[str]:
    """``consent`` as a child process, storing into a settings file of the test's own (never the checkout's)."""
    monkeypatch.delenv("PARTNER_CENTER_REFRESH_TOKEN")  # the first consent: there is none yet
    (cli.folder / "local.settings.json").write_text('{"IsEncrypted": false, "Values": {}}')
    settings = str(cli.folder / "local.settings.json")
    return cli.spawn("--settings", settings, "consent", "--no-browser", "--port", "0", *options)


def test_consent_ignores_a_redirect_that_is_not_its_own_sign_in(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = spawn_consent(cli, monkeypatch)
    url = sign_in_url(proc)
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    # Another local process (or a web page) reaches the port first: no state, or a state of its own.
    for forged in ({"error": "access_denied"}, {"error": "access_denied", "state": "guess"}, {"code": "x"}):
        answer = requests.get(redirect, params=forged, timeout=10)
        assert answer.status_code == 400
    time.sleep(0.3)
    assert proc.poll() is None, "the forged redirect ended the sign-in"

    page = requests.get(url, timeout=10)  # the partner admin's browser: Entra's redirect with the right state
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 0, stderr
    assert page.status_code == 200 and "Signed in" in page.text


def test_consent_prints_entras_error_description_without_control_characters(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.entra.sign_in_error = "access_denied"
    cli.entra.sign_in_error_description = "AADSTS65004: declined\x1b[2J\x1b]0;owned\x07\r\nERROR forged line\x9b31m"

    proc = spawn_consent(cli, monkeypatch)
    page = requests.get(sign_in_url(proc), timeout=10)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 3
    assert "Consent not given" in page.text
    assert "AADSTS65004: declined" in stderr and "access_denied" in stderr
    assert not [ch for ch in stderr if not ch.isprintable() and ch != "\n"], repr(stderr)
    assert not any(line.startswith("ERROR forged line") for line in stderr.splitlines())
