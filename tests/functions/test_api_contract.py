"""Property-based API tests generated from the connector's definition (schemathesis).

The integrations' definition is loaded the way a maker imports it, from ``GET /api/openapi.json``; the operators'
from its file (``connector/operator/``, never served). Requests generated from them (valid ones, and invalid ones
for the negative checks) go through a WSGI stand-in for the Functions host
(:mod:`tests.wsgi_host`) to the HTTP functions, with the loopback Entra ID and Partner Center and Azurite
behind. Every response must be declared, match its schema, headers and content type, and never be a 500.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from sandbox import CUSTOMER_ID
from tests.wsgi_host import FunctionsWsgiApp

FUNCTION_KEY = "contract-test-key"
#: In the operators' connector; the others are the integrations' (the served definition).
OPERATOR_OPERATIONS = ["ListProductUpgrades", "GetCampaignSummary"]
OPERATIONS = [
    "CreateProductUpgrade",
    "CheckProductUpgradeEligibility",
    "GetProductUpgradeStatus",
    *OPERATOR_OPERATIONS,
]
REPO = Path(__file__).resolve().parents[2]
#: A campaign the ledger holds, so that generated summary requests meet 200 answers too, not only 404.
KNOWN_CAMPAIGN = "Wave-1"
#: Bounded: the whole module stays within seconds (2 modes x 4 operations x this many cases).
MAX_EXAMPLES = 25
#: A valid request may still be refused for what it asks: an unknown customer or upgrade (404), an upgrade in
#: progress (409), a refusal of the customer, or an Idempotency-Key already used for another customer (422).
VALID_BUT_REFUSED = ["2XX", "404", "409", "422"]
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {"positive_data_acceptance": {"expected-statuses": VALID_BUT_REFUSED}},
        # Every case carries the function key (sent below); the host's own 401 is tested on its own.
        "generation": {"with-security-parameters": False},
    }
)


@pytest.fixture
def api_schema(stored_app):
    """The served definition, loaded from the app itself, calling the app through the WSGI stand-in."""
    return schemathesis.openapi.from_wsgi("/api/openapi.json", FunctionsWsgiApp([FUNCTION_KEY]), config=CONFIG)


@pytest.fixture
def operator_schema(stored_app):
    """The operators' connector file, calling the app through the same WSGI stand-in."""
    raw = json.loads((REPO / "connector" / "operator" / "apiDefinition.swagger.json").read_text(encoding="utf-8"))
    schema = schemathesis.openapi.from_dict(raw, config=CONFIG)
    schema.app = FunctionsWsgiApp([FUNCTION_KEY])
    return schema


def without_continuation_token(case):
    # A continuation token is valid only as the app issued it (any other is a 400 by contract): a generated one
    # is not "valid data". Following real tokens is the ledger's and list route's own test.
    if case.query:
        case.query.pop("continuationToken", None)
    return case


def cases(operation, mode, partner_center):
    """Generated cases; for the status route, about half of them ask about an upgrade Partner Center knows, which
    runs for a few polls and then completes, so generated cases meet 202 and 200 answers, not only 404."""
    generated = operation.as_strategy(generation_mode=mode)
    if operation.definition.raw["operationId"] == "ListProductUpgrades" and mode is GenerationMode.POSITIVE:
        return generated.map(without_continuation_token)
    if operation.definition.raw["operationId"] == "GetCampaignSummary" and mode is GenerationMode.POSITIVE:
        known = operation.as_strategy(generation_mode=mode, path_parameters={"name": KNOWN_CAMPAIGN.lower()})
        return st.one_of(generated, known)
    if operation.definition.raw["operationId"] != "GetProductUpgradeStatus" or mode is not GenerationMode.POSITIVE:
        return generated
    upgrade_id = partner_center.add_upgrade(CUSTOMER_ID)
    partner_center.complete_after_polls(MAX_EXAMPLES // 4, upgrade_id)
    known = operation.as_strategy(
        generation_mode=mode, path_parameters={"upgradeId": upgrade_id}, query={"customerId": CUSTOMER_ID}
    )
    return st.one_of(generated, known)


def find_operation(api_schema, operation_id):
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") == operation_id:
            return operation
    raise AssertionError(f"{operation_id} is not in the definition")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_every_response_is_declared_and_never_a_server_error(
    api_schema, operator_schema, stored_app, operation_id, mode
):
    schema = operator_schema if operation_id in OPERATOR_OPERATIONS else api_schema
    operation = find_operation(schema, operation_id)
    statuses: list[int] = []
    listed: list[dict] = []
    if operation_id in ("ListProductUpgrades", "GetCampaignSummary"):
        # Upgrades in the ledger, so that listed items and summaries are checked against their schemas too.
        stored_app.create({"customerId": CUSTOMER_ID}, headers={"Idempotency-Key": "order-1"})
        stored_app.create({"customerId": "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a", "campaign": KNOWN_CAMPAIGN})

    @given(case=cases(operation, mode, stored_app.partner_center))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case):
        response = case.call_and_validate(headers={"x-functions-key": FUNCTION_KEY})
        statuses.append(response.status_code)
        if operation_id == "ListProductUpgrades" and response.status_code == 200:
            listed.extend(response.json()["items"])

    run()
    assert statuses and 500 not in statuses
    if mode is GenerationMode.POSITIVE:
        # Valid requests reach the handlers: some are answered with success, not all refused.
        assert any(status < 300 for status in statuses), statuses
    if operation_id == "GetProductUpgradeStatus" and mode is GenerationMode.POSITIVE:
        # Whatever hypothesis drew, a running upgrade's 202 (Location, Retry-After) and its final 200 are checked.
        upgrade_id = stored_app.partner_center.add_upgrade(CUSTOMER_ID)
        stored_app.partner_center.complete_after_polls(1, upgrade_id)
        case = operation.Case(path_parameters={"upgradeId": upgrade_id}, query={"customerId": CUSTOMER_ID})
        polled = [case.call_and_validate(headers={"x-functions-key": FUNCTION_KEY}).status_code for _ in range(2)]
        assert polled == [202, 200]
    if operation_id == "ListProductUpgrades" and mode is GenerationMode.POSITIVE:
        assert listed, "no listed upgrade was checked against the item schema"


def test_a_missing_function_key_is_refused_as_the_host_does(api_schema):
    operation = find_operation(api_schema, "CreateProductUpgrade")
    case = operation.Case(body={"customerId": "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a"}, media_type="application/json")
    assert case.call().status_code == 401
    assert case.call(headers={"x-functions-key": FUNCTION_KEY}).status_code == 202
    assert case.call(params={"code": FUNCTION_KEY}).status_code == 202
