"""The entry point: exit codes, where settings come from, the console script, the CSV's customer column."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from typing import Any

import pytest

import shared
from sandbox import FakeEntra
from shared.cli import main as cli_main
from tests.cli.helpers import REPO_ROOT, Cli, customers, read_report, write_csv

# -- exit codes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("", "empty"),
        ("customerId\n", "no data rows"),
        ("customer,name\nx,y\n", "no customerId column"),
        (b"customerId\n\xff\xfe\n", "could not be read"),
    ],
)
def test_unusable_csv_is_a_usage_error(cli: Cli, content: str | bytes | None, expected: str) -> None:
    path = cli.folder / "in.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")

    assert ran.code == 2
    assert expected in ran.json()["error"]["message"] and expected in ran.stderr
    assert cli.partner_center.requests == [] and not (cli.folder / "r.csv").exists()


def test_bad_arguments_are_usage_errors(cli: Cli) -> None:
    assert cli.run("upgrade", "not-a-guid").code == 2
    assert cli.run("status", "abc", "--customer", "nope").code == 2
    assert cli.run("status", "a/b", "--customer", str(uuid.uuid4())).code == 2
    assert cli.run("eligibility", str(uuid.uuid4()), "--product-family", "Azure plan!").code == 2
    with pytest.raises(SystemExit) as exited:
        cli.run("bulk", "x.csv", "--report", "r.csv", "--concurrency", "0")
    assert exited.value.code == 2
    assert cli.partner_center.requests == []


def test_missing_setting_exits_3_naming_it(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(2)])

    for args in (("upgrade", str(uuid.uuid4())), ("bulk", str(path), "--report", "r.csv")):
        ran = cli.run(*args, "--json")
        assert ran.code == 3
        assert "PARTNER_CENTER_TENANT_ID" in ran.json()["error"]["message"]
        assert "PARTNER_CENTER_TENANT_ID" in ran.stderr


def test_missing_secret_setting_exits_3_before_sending(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTNER_CENTER_APP_SECRET")
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(2)])

    ran = cli.run("bulk", str(path), "--report", "r.csv")

    assert ran.code == 3 and "PARTNER_CENTER_APP_SECRET" in ran.stderr
    assert cli.partner_center.requests == []


def test_refused_refresh_token_exits_3_telling_to_consent_again(cli: Cli) -> None:
    cli.entra.expire_refresh_tokens()
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(3)])

    for args in (("bulk", str(path), "--report", "r.csv"), ("upgrade", str(uuid.uuid4()))):
        ran = cli.run(*args)
        assert ran.code == 3
        assert "invalid_grant" in ran.stderr and "product-upgrades consent" in ran.stderr
    assert cli.partner_center.requests == []


def test_token_rejected_midway_stops_the_campaign_with_exit_3(cli: Cli) -> None:
    path = write_csv(cli.folder / "c.csv", [{"customerId": c} for c in customers(5)])
    cli.partner_center.fail_next(
        50, 401, {"code": "900420", "description": "Invalid Token"}, match="/v1/productupgrades"
    )

    ran = cli.run("bulk", str(path), "--report", "r.csv", "--concurrency", "1")

    assert ran.code == 3 and "Partner Center answered 401" in ran.stderr
    assert cli.partner_center.create_posts <= 2  # the first row (and its one retry with a fresh token), no more


def test_settings_come_from_the_projects_local_settings_json_when_not_in_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {name: os.environ[name] for name in ("PARTNER_CENTER_TENANT_ID", "PARTNER_CENTER_BASE_URL")}
    for name in values:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PARTNER_CENTER_AUTHORITY_HOST", "")  # empty counts as unset: the file's value is used
    values["PARTNER_CENTER_AUTHORITY_HOST"] = cli.entra.url
    cli.project_settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    ran = cli.run("eligibility", str(uuid.uuid4()), "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["isEligible"] is True
    assert f"settings: the environment and {cli.project_settings}" in ran.stderr


def test_environment_wins_over_local_settings_json(cli: Cli) -> None:
    cli.project_settings.write_text(json.dumps({"Values": {"PARTNER_CENTER_BASE_URL": "https://127.0.0.1:9/nowhere"}}))
    assert cli.run("eligibility", str(uuid.uuid4())).code == 0


def test_broken_local_settings_json_exits_3(cli: Cli) -> None:
    cli.project_settings.write_text("{not json")
    ran = cli.run("eligibility", str(uuid.uuid4()))
    assert ran.code == 3 and "local.settings.json is not valid JSON" in ran.stderr
    cli.project_settings.write_text('{"Values": ["a"]}')
    assert cli.run("eligibility", str(uuid.uuid4())).code == 3


def test_a_local_settings_json_in_the_working_folder_cannot_send_the_credentials_elsewhere(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, ca_env: Any
) -> None:
    # The partner's own settings (the project's file) name its endpoints; the environment leaves them to it.
    endpoints = ("PARTNER_CENTER_AUTHORITY_HOST", "PARTNER_CENTER_BASE_URL")
    cli.project_settings.write_text(json.dumps({"Values": {name: os.environ[name] for name in endpoints}}))
    for name in endpoints:
        monkeypatch.delenv(name)
    with FakeEntra(tls=ca_env) as attacker:
        # A campaign folder someone sent: a CSV and a local.settings.json naming their own endpoints.
        planted = {"PARTNER_CENTER_AUTHORITY_HOST": attacker.url, "PARTNER_CENTER_BASE_URL": attacker.url}
        (cli.folder / "local.settings.json").write_text(json.dumps({"Values": planted}))
        path = write_csv(cli.folder / "wave.csv", [{"customerId": c} for c in customers(2)])

        ran = cli.run("bulk", str(path), "--report", "r.csv")

        assert attacker.requests == [], "the app secret and refresh token went to the planted endpoint"
    assert ran.code == 0, ran.stderr
    assert cli.entra.requests_to("/oauth2/v2.0/token") and cli.partner_center.create_posts == 2
    assert f"not reading {cli.folder / 'local.settings.json'}" in ran.stderr
    assert f"--settings {cli.folder / 'local.settings.json'}" in ran.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_settings_file_named_with_the_settings_option_is_read(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    tenant = os.environ["PARTNER_CENTER_TENANT_ID"]
    settings = cli.folder / "partner.settings.json"
    settings.write_text(json.dumps({"Values": {"PARTNER_CENTER_TENANT_ID": tenant}}))
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    cli.project_settings.write_text(json.dumps({"Values": {"PARTNER_CENTER_TENANT_ID": "not-this.example"}}))
    option = ["--settings", str(settings)]
    args = (
        [*option, "eligibility", str(uuid.uuid4())]
        if where == "before"
        else ["eligibility", str(uuid.uuid4()), *option]
    )

    ran = cli.run(*args, "--json")

    assert ran.code == 0, ran.stderr
    assert f"settings: the environment and {settings}" in ran.stderr
    assert cli.entra.requests_to("/oauth2/v2.0/token")[0].path.startswith(f"/{tenant}/")


def test_a_missing_setting_names_the_sources_read_and_how_to_point_at_a_file(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")

    ran = cli.run("eligibility", str(uuid.uuid4()), "--json")

    assert ran.code == 3
    message = ran.json()["error"]["message"]
    assert message.startswith("setting PARTNER_CENTER_TENANT_ID is required but not set")
    assert f"settings read from the environment only ({cli.project_settings} does not exist)" in message
    assert "--settings PATH" in message and message in ran.stderr
    cli.project_settings.write_text(json.dumps({"Values": {"Other": "x"}}))
    again = cli.run("eligibility", str(uuid.uuid4()), "--json").json()["error"]["message"]
    assert f"settings read from the environment and {cli.project_settings}" in again


def test_a_settings_file_that_does_not_exist_exits_3(cli: Cli) -> None:
    ran = cli.run("--settings", str(cli.folder / "nope.json"), "eligibility", str(uuid.uuid4()))
    assert ran.code == 3 and f"--settings {cli.folder / 'nope.json'}: no such file" in ran.stderr
    assert cli.partner_center.requests == []


# -- packaging -----------------------------------------------------------------------------------------------


def test_console_script_points_at_run() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["product-upgrades"] == "shared.cli.main:run"
    assert callable(cli_main.run)
    ran = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 0
    for command in ("upgrade", "eligibility", "status", "bulk", "list", "consent"):
        assert command in ran.stdout


def test_campaign_csv_needs_only_a_customer_column_in_any_case(cli: Cli) -> None:
    path = cli.folder / "c.csv"
    path.write_text(f"CustomerID,Region\n{uuid.uuid4()},EU\n,\n")
    ran = cli.run("bulk", str(path), "--report", "r.csv", "--json")
    assert ran.code == 0 and ran.json()["rows"] == 1  # the blank line is no row
    assert read_report(cli.folder / "r.csv")[0]["Region"] == "EU"


def test_version_is_the_release_of_pyproject_and_the_changelog(capsys: pytest.CaptureFixture[str]) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shared.__version__"}
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["--version"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"product-upgrades {shared.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", shared.__version__)
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert f"What will be released as {shared.__version__}." in changelog or f"## [{shared.__version__}]" in changelog
