"""The workflow's rules that every adapter shares: which MS-RequestId an attempt sends, and what an upgrade the
eligibility call names means. Driven through the function app against the loopback Partner Center (and Azurite
where the ledger keeps the count of answers)."""

import json

from sandbox import CUSTOMER_ID
from shared.ids import OperationIds, request_id_for
from shared.settings import StorageConnection
from shared.store.table_ledger import TableLedger
from shared.upgrades import runtime

PROBLEM_BASE = "urn:partner-center-product-upgrades:problem:"


def sent_request_ids(partner_center) -> list[str]:
    return [r.header("MS-RequestId") for r in partner_center.requests_to("/v1/productupgrades", "POST")]


def next_request_id(key: str, answers: int) -> str:
    return OperationIds(key, "any", business_answers=answers).partner_center_request_id


# -- MS-RequestId: new after a business answer, the same across retries of no answer ---------------------------
def test_a_retry_after_a_refusal_sends_the_next_ms_request_id_and_gets_through(stored_app, azurite):
    partner_center = stored_app.partner_center
    partner_center.replay_refusals()  # Partner Center answers a known MS-RequestId as it did before
    partner_center.set_customer_error(
        CUSTOMER_ID, 403, 900130, "Purchased recently; please try again later.", operations=("create",), times=1
    )
    headers = {"Idempotency-Key": "crm-42"}
    answers = [stored_app.create({"customerId": CUSTOMER_ID}, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [422, 202, 202]
    assert json.loads(answers[1].get_body())["upgradeId"] == json.loads(answers[2].get_body())["upgradeId"]
    key = request_id_for("idempotency-key", "crm-42")
    # the third is the ledger's replay of the accepted request: no POST
    assert sent_request_ids(partner_center) == [key, next_request_id(key, 1)]
    ledger = TableLedger(
        StorageConnection(connection_string=azurite.connection_string), runtime.get_runtime().settings.table_name
    )
    record = ledger.get_request(key)  # the ledger's key never changes
    assert record is not None and record.status == "accepted"


def test_every_refusal_moves_to_the_next_ms_request_id_and_retries_of_no_answer_keep_it(stored_app):
    partner_center = stored_app.partner_center
    headers = {"Idempotency-Key": "crm-43"}
    partner_center.set_customer_error(CUSTOMER_ID, 409, 900101, "Conflict.", operations=("create",), times=2)
    refused = [stored_app.create({"customerId": CUSTOMER_ID}, headers=headers).status_code for _ in range(2)]
    partner_center.fail_next(2, 503, match="/v1/productupgrades")  # no answer twice: retried with the same id
    accepted = stored_app.create({"customerId": CUSTOMER_ID}, headers=headers)
    assert refused == [409, 409] and accepted.status_code == 202
    key = request_id_for("idempotency-key", "crm-43")
    third = next_request_id(key, 2)
    assert sent_request_ids(partner_center) == [key, next_request_id(key, 1), third, third, third]
    assert len(partner_center.created_upgrades) == 1


# -- an upgrade the eligibility call names ------------------------------------------------------------------------
def test_eligibility_naming_a_completed_upgrade_is_rejected_already_upgraded(app_env):
    completed = app_env.partner_center.add_upgrade(CUSTOMER_ID, status="Completed")
    result = json.loads(app_env.queue({"customerId": CUSTOMER_ID, "checkEligibility": True}))
    assert (result["status"], result["upgradeId"]) == ("rejected", None)
    assert result["error"]["code"] == "already_upgraded" and result["error"]["retryable"] is False
    assert completed in result["error"]["message"]
    assert app_env.partner_center.create_posts == 0
    status_checks = app_env.partner_center.requests_to(f"/v1/productUpgrades/{completed}/status", "POST")
    assert len(status_checks) == 1  # its status was asked first


def test_a_create_answered_with_a_completed_upgrade_is_409_already_upgraded(app_env):
    # 900109 on create, and the eligibility call names an upgrade that has completed
    app_env.partner_center.add_upgrade(CUSTOMER_ID, status="Completed")
    app_env.partner_center.set_customer_error(
        CUSTOMER_ID, 409, 900109, "An upgrade is already in progress.", operations=("create",)
    )
    response = app_env.create({"customerId": CUSTOMER_ID})
    body = json.loads(response.get_body())
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert body["type"] == PROBLEM_BASE + "already_upgraded" and body["retryable"] is False


def test_eligibility_naming_a_running_upgrade_is_accepted_with_that_id(app_env):
    running = app_env.partner_center.add_upgrade(CUSTOMER_ID)
    result = json.loads(app_env.queue({"customerId": CUSTOMER_ID, "checkEligibility": True}))
    assert (result["status"], result["upgradeId"]) == ("accepted", running)
    assert app_env.partner_center.create_posts == 0


def test_eligibility_naming_a_failed_upgrade_is_not_eligible(app_env):
    failed = app_env.partner_center.add_upgrade(CUSTOMER_ID, status="Failed")
    eligibility = {
        "customerId": CUSTOMER_ID,
        "productFamily": "Azure",
        "isEligible": False,
        "upgradeId": failed,
        "reason": "An upgrade is already in place.",
    }
    app_env.partner_center.fail_next(1, 200, eligibility, match="/eligibility")
    result = json.loads(app_env.queue({"customerId": CUSTOMER_ID, "checkEligibility": True}))
    assert (result["status"], result["error"]["code"]) == ("rejected", "not_eligible")
    assert f"upgrade {failed} is Failed" in result["error"]["message"]
