"""The local sandbox: the process the docs point to, and its scripted customers on the wire."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sandbox import CUSTOMER_ID, customers
from sandbox.cli import READY_LINE, Sandbox, running_sandbox
from sandbox.constants import ALREADY_UPGRADED_REASON, APP_ID, APP_SECRET, PARTNER_CENTER_SCOPE, REFRESH_TOKEN
from sandbox.tls import CA_ENV_VARS
from shared.settings import ALL_SETTINGS, Settings
from shared.upgrades import runtime
from tests.harness import App

ROOT = Path(__file__).resolve().parents[2]


def test_sandbox_serves_what_it_prints(monkeypatch, tmp_path):
    command = [sys.executable, "-m", "sandbox", "--entra-port", "0", "--partner-center-port", "0"]
    command += ["--completed-after-seconds", "3600", "--completed-after-polls", "2"]
    settings_out = tmp_path / "values.json"
    proc = subprocess.Popen(
        [*command, "--dir", str(tmp_path), "--settings-out", str(settings_out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == READY_LINE:
                break
            lines.append(line)
        values = json.loads("".join(lines))["Values"]
        assert json.loads(settings_out.read_text())["Values"] == values
        for name in ALL_SETTINGS:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        runtime.install(runtime.Runtime.build(Settings.from_env(), poll_interval_seconds=0))
        app = App(partner_center=None, entra=None)  # type: ignore[arg-type]
        created = app.create({"customerId": CUSTOMER_ID})
        assert created.status_code == 202, created.get_body()
        upgrade_id = json.loads(created.get_body())["upgradeId"]
        statuses = [app.status(upgrade_id, {"customerId": CUSTOMER_ID}).status_code for _ in range(3)]
        assert statuses == [202, 202, 200]
    finally:
        runtime.install(None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "1 upgrade(s) created" in err
    for customer in customers.SCRIPTED_CUSTOMERS:
        assert customer.customer_id in err  # the table of scripted customers is printed at start
    assert "Customer list: 1000 customers (seed 2027)" in err  # and the population the customer list holds
    assert os.path.exists(values["REQUESTS_CA_BUNDLE"])


def test_sandbox_rejects_a_negative_delay(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "--completed-after-seconds", "-1", "--dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "must be 0 or more" in proc.stderr


# -- the scripted customers, on the wire -------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path, entra_port=0, partner_center_port=0, completed_after_seconds=0.5) as running:
        for name in CA_ENV_VARS:
            monkeypatch.setenv(name, running.ca_bundle)
        yield running
    assert running.partner_center.errors == [] and running.entra.errors == []


class Caller:
    """Partner Center's REST API as the docs describe it, called with requests and an App+User token."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.base = sandbox.partner_center.url
        token = requests.post(
            sandbox.entra.token_endpoint,
            data={
                "grant_type": "refresh_token",
                "client_id": APP_ID,
                "client_secret": APP_SECRET,
                "refresh_token": REFRESH_TOKEN,
                "scope": PARTNER_CENTER_SCOPE,
            },
            timeout=10,
        )
        assert token.status_code == 200, token.text
        self.headers = {
            "Authorization": f"Bearer {token.json()['access_token']}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "MS-CorrelationId": str(uuid.uuid4()),
        }

    def post(self, path: str, customer_id: str) -> requests.Response:
        body = {"customerId": customer_id, "productFamily": "Azure"}
        headers = {**self.headers, "MS-RequestId": str(uuid.uuid4())}
        return requests.post(f"{self.base}{path}", json=body, headers=headers, timeout=10)

    def eligibility(self, customer_id: str) -> requests.Response:
        return self.post("/v1/productUpgrades/eligibility", customer_id)

    def create(self, customer_id: str) -> requests.Response:
        return self.post("/v1/productupgrades", customer_id)

    def status(self, upgrade_id: str, customer_id: str) -> dict[str, Any]:
        response = self.post(f"/v1/productUpgrades/{upgrade_id}/status", customer_id)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def create_accepted(self, customer_id: str) -> str:
        response = self.create(customer_id)
        assert response.status_code == 202, response.text
        assert response.content == b""
        location = response.headers["Location"]
        assert re.fullmatch(r"productUpgrades/[0-9a-f-]{36}", location)
        return location.split("/", 1)[1]

    def follow(self, upgrade_id: str, customer_id: str, timeout: float = 10) -> list[dict[str, Any]]:
        """Status documents until one has ended."""
        documents = [self.status(upgrade_id, customer_id)]
        deadline = time.monotonic() + timeout
        while documents[-1]["status"] in ("InProgress", customers.UNKNOWN_STATUS) and time.monotonic() < deadline:
            time.sleep(0.1)
            documents.append(self.status(upgrade_id, customer_id))
        return documents


def test_eligible_customer_completes_after_the_delay(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    eligibility = caller.eligibility(customers.ELIGIBLE)
    assert eligibility.status_code == 200
    assert eligibility.json()["isEligible"] is True
    started = time.monotonic()
    upgrade_id = caller.create_accepted(customers.ELIGIBLE)
    documents = caller.follow(upgrade_id, customers.ELIGIBLE)
    assert documents[0]["status"] == "InProgress"
    assert time.monotonic() - started >= 0.5
    final = documents[-1]
    assert final["status"] == "Completed"
    assert "errorDetails" not in final  # left out when there is none, as in the docs' example
    [line] = final["lineItems"]
    assert line["status"] == "Completed" and line["upgradedDate"] and "errorDetails" not in line
    assert line["sourceProduct"]["name"] == "AzureSubscription" and uuid.UUID(line["sourceProduct"]["id"])
    assert line["targetProduct"]["name"] == "Microsoft Azure plan"


def test_unscripted_customers_are_eligible(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    other = str(uuid.uuid4())
    assert caller.eligibility(other).json()["isEligible"] is True
    upgrade_id = caller.create_accepted(other)
    assert caller.follow(upgrade_id, other)[-1]["status"] == "Completed"


def test_not_eligible_customer(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    eligibility = caller.eligibility(customers.NOT_ELIGIBLE).json()
    assert eligibility["isEligible"] is False
    assert eligibility["reason"] == customers.NOT_ELIGIBLE_REASON
    create = caller.create(customers.NOT_ELIGIBLE)
    assert create.status_code == 403
    assert str(create.json()["code"]) == "900108"


def test_already_upgraded_customer(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    assert caller.eligibility(customers.ALREADY_UPGRADED).json()["isEligible"] is False
    create = caller.create(customers.ALREADY_UPGRADED)
    assert create.status_code == 400
    assert str(create.json()["code"]) == "900110"


def test_a_customer_whose_upgrade_completed_cannot_be_upgraded_again(sandbox: Sandbox) -> None:
    # As Partner Center: once a customer's upgrade has completed, another create is 400 900110 for as long as
    # the sandbox runs, and eligibility says why and names the upgrade in place.
    caller = Caller(sandbox)
    customer = str(uuid.uuid4())
    upgrade_id = caller.create_accepted(customer)
    assert caller.follow(upgrade_id, customer)[-1]["status"] == "Completed"

    again = caller.create(customer)
    eligibility = caller.eligibility(customer).json()

    assert again.status_code == 400
    assert str(again.json()["code"]) == "900110" and upgrade_id in again.json()["description"]
    assert eligibility["isEligible"] is False and eligibility["upgradeId"] == upgrade_id
    assert eligibility["reason"] == ALREADY_UPGRADED_REASON


def test_try_later_customer(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    for response in (caller.eligibility(customers.TRY_LATER), caller.create(customers.TRY_LATER)):
        assert response.status_code == 403
        body = response.json()
        assert str(body["code"]) == "900130"
        assert "try again later" in body["description"]
    assert sandbox.partner_center.created_upgrades == []


def test_throttled_customer_always_429_and_others_go_through(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    for _ in range(3):
        response = caller.create(customers.THROTTLED)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == customers.THROTTLED_RETRY_AFTER
        assert response.json()["statusCode"] == 429  # the gateway's body, not Partner Center's error shape
    assert caller.eligibility(customers.ELIGIBLE).status_code == 200


def test_throttled_twice_then_accepted(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    first, second = caller.create(customers.THROTTLED_TWICE), caller.create(customers.THROTTLED_TWICE)
    assert [first.status_code, second.status_code] == [429, 429]
    assert first.headers["Retry-After"] == "1"
    caller.create_accepted(customers.THROTTLED_TWICE)


def test_failing_upgrade_ends_failed_with_error_details(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    upgrade_id = caller.create_accepted(customers.FAILING_UPGRADE)
    final = caller.follow(upgrade_id, customers.FAILING_UPGRADE)[-1]
    assert final["status"] == "Failed"
    assert final["errorDetails"] == customers.FAILED_ERROR_DETAILS
    [line] = final["lineItems"]
    assert line["status"] == "Failed" and line["upgradedDate"] is None
    assert line["errorDetails"] == customers.FAILED_ERROR_DETAILS


def test_unknown_state_customer_reports_a_state_the_app_does_not_know_then_completes(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    upgrade_id = caller.create_accepted(customers.UNKNOWN_STATE)
    # running at Partner Center while it shows the unknown state: a second create meets 900109
    again = caller.create(customers.UNKNOWN_STATE)
    assert (again.status_code, str(again.json()["code"])) == (409, "900109")
    documents = caller.follow(upgrade_id, customers.UNKNOWN_STATE)
    assert documents[0]["status"] == customers.UNKNOWN_STATUS == "Validating"
    assert documents[-1]["status"] == "Completed"


def test_partial_upgrade_customer_completes_with_one_of_two_subscriptions_failed(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    upgrade_id = caller.create_accepted(customers.PARTIAL_UPGRADE)
    final = caller.follow(upgrade_id, customers.PARTIAL_UPGRADE)[-1]
    assert final["status"] == "Completed" and "errorDetails" not in final
    moved, stayed = final["lineItems"]
    assert moved["status"] == "Completed" and moved["upgradedDate"] and "errorDetails" not in moved
    assert stayed["status"] == "Failed" and stayed["upgradedDate"] is None
    assert stayed["errorDetails"] == customers.PARTIAL_ERROR_DETAILS
    assert moved["sourceProduct"]["id"] != stayed["sourceProduct"]["id"]


def test_privileges_refused_once_customer_refuses_one_status_check_with_900308(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    upgrade_id = caller.create_accepted(customers.PRIVILEGES_REFUSED_ONCE)
    refused = caller.post(f"/v1/productUpgrades/{upgrade_id}/status", customers.PRIVILEGES_REFUSED_ONCE)
    assert refused.status_code == 403 and str(refused.json()["code"]) == "900308"
    assert caller.follow(upgrade_id, customers.PRIVILEGES_REFUSED_ONCE)[-1]["status"] == "Completed"


def test_cancelled_upgrade_customer_ends_cancelled(sandbox: Sandbox) -> None:
    caller = Caller(sandbox)
    upgrade_id = caller.create_accepted(customers.CANCELLED_UPGRADE)
    final = caller.follow(upgrade_id, customers.CANCELLED_UPGRADE)[-1]
    assert final["status"] == "Cancelled"
    assert [line["status"] for line in final["lineItems"]] == ["Cancelled"]


def test_polls_or_seconds_whichever_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_sandbox(
        tmp_path, entra_port=0, partner_center_port=0, completed_after_seconds=3600, completed_after_polls=1
    ) as running:
        for name in CA_ENV_VARS:
            monkeypatch.setenv(name, running.ca_bundle)
        caller = Caller(running)
        upgrade_id = caller.create_accepted(customers.ELIGIBLE)
        statuses = [caller.status(upgrade_id, customers.ELIGIBLE)["status"] for _ in range(3)]
    assert statuses == ["InProgress", "Completed", "Completed"]


def test_sandbox_page_table_lists_every_scripted_customer() -> None:
    page = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    for customer in customers.SCRIPTED_CUSTOMERS:
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{customer.customer_id}`")]
        assert f"| {customer.behaviour} |" in row, row
        assert customer.answers in row, row
