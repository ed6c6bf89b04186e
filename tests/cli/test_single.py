"""The one-customer commands: ``upgrade``, ``eligibility``, ``status``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from shared.settings import STORAGE_SETTING
from shared.upgrades.runtime import get_runtime
from tests.cli.helpers import Cli
from tests.harness import Host

# -- one upgrade ---------------------------------------------------------------------------------------------


def test_upgrade_prints_the_create_routes_body(cli: Cli) -> None:
    customer = str(uuid.uuid4())

    ran = cli.run("upgrade", customer.upper(), "--json")

    assert ran.code == 0
    body = ran.json()
    assert body == {
        "upgradeId": cli.partner_center.created_upgrades[0]["upgrade_id"],
        "customerId": customer,
        "productFamily": "Azure",
        "status": "accepted",
    }
    human = cli.run("upgrade", str(uuid.uuid4()), "--idempotency-key", "k-1")
    assert human.code == 0 and human.stdout.strip() == cli.partner_center.created_upgrades[1]["upgrade_id"]


def test_upgrade_idempotency_key_maps_like_the_http_route(cli: Cli) -> None:
    from shared.upgrades.workflow import request_id_for

    customer = str(uuid.uuid4())
    cli.run("upgrade", customer, "--idempotency-key", "ticket-42")
    (post,) = cli.partner_center.requests_to("/v1/productupgrades", "POST")
    assert post.header("MS-RequestId") == request_id_for("idempotency-key", "ticket-42")


def test_upgrade_refused_exits_1_with_partner_centers_code(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    cli.partner_center.set_ineligible(customer, "Not a legacy customer.")

    ran = cli.run("upgrade", customer, "--check-eligibility", "--json")

    assert ran.code == 1
    assert ran.json()["error"]["code"] == "not_eligible"
    assert cli.partner_center.create_posts == 0


def test_upgrade_wait_follows_until_completed(cli: Cli) -> None:
    cli.partner_center.complete_after_polls(2)

    ran = cli.run("upgrade", str(uuid.uuid4()), "--wait", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["outcome"] == "completed" and ran.json()["partnerCenterStatus"] == "Completed"
    assert cli.partner_center.status_polls == 3
    assert ran.stderr.count(": InProgress") == 2


def test_eligibility_answers_are_successes(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    cli.partner_center.set_ineligible(customer, "No legacy subscription.")

    ran = cli.run("eligibility", customer, "--json")
    human = cli.run("eligibility", customer)

    assert ran.code == 0 and human.code == 0
    assert ran.json() == {
        "customerId": customer,
        "productFamily": "Azure",
        "isEligible": False,
        "upgradeId": None,
        "reason": "No legacy subscription.",
    }
    assert human.stdout.strip() == "not eligible: No legacy subscription."
    assert cli.run("eligibility", str(uuid.uuid4())).stdout.startswith("eligible")


def test_status_prints_the_status_document_and_waits(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    upgrade_id = cli.partner_center.add_upgrade(customer)

    running = cli.run("status", upgrade_id, "--customer", customer, "--json")
    cli.partner_center.complete_after_polls(1, upgrade_id)
    waited = cli.run("status", upgrade_id, "--customer", customer, "--wait", "--json")

    assert running.code == 0 and waited.code == 0
    assert running.json()["status"] == "InProgress" and running.json()["upgradeId"] == upgrade_id
    assert set(running.json()) == {
        "upgradeId",
        "customerId",
        "id",
        "productFamily",
        "status",
        "lineItems",
        "errorDetails",
    }
    assert waited.json()["status"] == "Completed"
    missing = cli.run("status", "nope", "--customer", customer)
    assert missing.code == 1 and "900106" in missing.stderr


def test_status_wait_of_a_failed_upgrade_exits_1(cli: Cli) -> None:
    customer = str(uuid.uuid4())
    upgrade_id = cli.partner_center.add_upgrade(customer, status="Failed")
    # Partner Center down for longer than one call's retries: the wait asks again after the poll interval.
    cli.partner_center.fail_next(5, 503, headers={"Retry-After": "0"}, match="status")

    ran = cli.run("status", upgrade_id, "--customer", customer, "--wait")

    assert ran.code == 1 and '"status": "Failed"' in ran.stdout
    assert len(cli.partner_center.requests_to("status")) == 6
    unknown = cli.run("status", "0f0f0f0f", "--customer", customer, "--wait")
    assert unknown.code == 1 and "900106" in unknown.stderr


# -- --wait records what it learns in the ledger, as the functions' tracking does ------------------------------


def ledger_states() -> dict[str, str]:
    return {record.upgrade_id: record.state for record in get_runtime().ledger.list_upgrades(top=100).items}


def outcomes_sent() -> list[dict[str, Any]]:
    host = Host(os.environ[STORAGE_SETTING])
    host.run_once()
    return host.outcomes


def test_upgrade_wait_records_the_outcome_in_the_ledger(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    cli.partner_center.complete_after_polls(1)
    os.environ["PRODUCT_UPGRADE_POLL_SECONDS"] = "0.2"

    ran = cli.run("upgrade", str(uuid.uuid4()), "--wait", "--json")

    assert ran.code == 0, ran.stderr
    upgrade_id = ran.json()["upgradeId"]
    assert ran.json()["outcome"] == "completed"
    assert ledger_states() == {upgrade_id: "completed"}
    assert [outcome["upgradeId"] for outcome in outcomes_sent()] == [upgrade_id]


def test_status_wait_records_the_outcome_of_an_upgrade_the_ledger_holds(stored_app: Any, tmp_path: Path) -> None:
    cli = Cli(tmp_path, stored_app.entra, stored_app.partner_center)
    customer = str(uuid.uuid4())
    upgrade_id = cli.run("upgrade", customer, "--json").json()["upgradeId"]
    assert ledger_states() == {upgrade_id: "running"}
    cli.partner_center.complete_after_polls(0)

    ran = cli.run("status", upgrade_id, "--customer", customer, "--wait", "--json")

    assert ran.code == 0, ran.stderr
    assert ran.json()["status"] == "Completed"
    assert ledger_states() == {upgrade_id: "completed"}
    assert [outcome["upgradeId"] for outcome in outcomes_sent()] == [upgrade_id]


def test_upgrade_names_the_next_command_on_stderr(cli: Cli) -> None:
    customer = str(uuid.uuid4())

    ran = cli.run("upgrade", customer)

    upgrade_id = cli.partner_center.created_upgrades[0]["upgrade_id"]
    assert ran.stdout.strip() == upgrade_id
    assert f"next: product-upgrades status {upgrade_id} --customer {customer} --wait" in ran.stderr
