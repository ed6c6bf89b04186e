"""The key model: integrations hold one function key that opens create, eligibility and status only; the operator
routes (the ledger's list, health details) take a key no integration holds; no Bicep hands out a host key.

The keys are the ones ``infra/keys.bicep`` declares (parsed with pycep, the functions each key goes on read from
``infra/app/function-access.json`` as ``loadJsonContent`` does); the app runs behind ``tests/wsgi_host.py``'s
stand-in for the Functions host, which authorizes as the host does: a host key opens every function-level route,
a function key its own function only.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser
from werkzeug.test import Client

from sandbox import CUSTOMER_ID
from tests.wsgi_host import FunctionsWsgiApp, http_routes

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
EXAMPLES = REPO / "examples" / "logic-apps"
INTEGRATION_KEY = "integration-" + "i" * 40
OPERATOR_KEY = "operator-" + "o" * 40
HOST_KEY = "host-default-" + "h" * 40
#: What integrations call; everything else of the app's function-level routes is the operator's.
INTEGRATION_FUNCTIONS = {"create_product_upgrade", "check_product_upgrade_eligibility", "get_product_upgrade_status"}


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(text=path.read_text(encoding="utf-8"))


def loaded_json(tree: dict[str, Any], variable: str, folder: Path) -> Any:
    """The value of ``var <variable> = loadJsonContent('<file>')``."""
    function = tree["variables"][variable]["value"]["function"]
    assert function["type"] == "load_json_content"
    return json.loads((folder / function["parameters"]["file_path"]).read_text(encoding="utf-8"))


def declared_keys() -> dict[str, dict[str, str]]:
    """Function name -> {key name: the secure parameter of infra/keys.bicep that sets its value}."""
    tree = parse(INFRA / "keys.bicep")
    access = loaded_json(tree, "access", INFRA)
    module_tree = parse(INFRA / "app" / "function-key.bicep")
    [key] = [r for r in module_tree["resources"].values() if r["type"] == "Microsoft.Web/sites/functions/keys"]
    loop = key["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "functionNames" and key["config"]["config"]["name"] == "keyName"
    assert key["config"]["config"]["properties"]["value"] == "keyValue"
    keys: dict[str, dict[str, str]] = {}
    for module in tree["modules"].values():
        assert module["detail"]["path"] == "app/function-key.bicep"
        params = module["config"]["params"]
        listed = params["functionNames"]["operator"]["operands"]
        assert listed["operand_1"] == "access"
        for name in access[listed["operand_2"]]:
            keys.setdefault(name, {})[params["keyName"]] = params["keyValue"]
    return keys


def function_level_functions() -> set[str]:
    return {route.function_name for route in http_routes() if route.auth_level == "FUNCTION"}


def test_every_function_level_route_is_the_integrations_or_the_operators() -> None:
    access = json.loads((INFRA / "app" / "function-access.json").read_text(encoding="utf-8"))
    integration, operator = set(access["integration"]), set(access["operator"])
    assert integration == INTEGRATION_FUNCTIONS
    assert not integration & operator
    # A new route must be named one or the other here, or no key but a host key opens it.
    assert integration | operator == function_level_functions()


def test_the_keys_bicep_gives_each_key_its_own_secure_value() -> None:
    tree = parse(INFRA / "keys.bicep")
    values = {value for keys in declared_keys().values() for value in keys.values()}
    assert values == {"integrationKey", "operatorKey"}
    for name in values:
        decorators = {d["type"]: d.get("argument") for d in tree["parameters"][name]["decorators"]}
        assert "secure" in decorators and decorators["min_length"] >= 32
        assert tree["parameters"][name]["default"] is None, "a key value must never be a default in the template"
    assert all(len(keys) == 1 for keys in declared_keys().values()), "a function with two keys opens to both"


@pytest.fixture
def host(app_env: Any) -> Client:
    """The app behind the host stand-in, with the host's default key and the keys keys.bicep declares."""
    values = {"integrationKey": INTEGRATION_KEY, "operatorKey": OPERATOR_KEY}
    keys_of = {name: {key: values[param] for key, param in keys.items()} for name, keys in declared_keys().items()}
    return Client(FunctionsWsgiApp([HOST_KEY], keys_of=keys_of))


def call(client: Client, route: str, key: str) -> int:
    body = {"customerId": CUSTOMER_ID}
    calls = {
        "create_product_upgrade": lambda: client.post("/api/productupgrades", json=body, query_string={"code": key}),
        "check_product_upgrade_eligibility": lambda: client.post(
            "/api/productupgrades/eligibility", json=body, headers={"x-functions-key": key}
        ),
        "get_product_upgrade_status": lambda: client.get(
            "/api/productupgrades/00000000-0000-0000-0000-0000000000aa",
            query_string={"customerId": CUSTOMER_ID, "code": key},
        ),
        "list_product_upgrades": lambda: client.get("/api/productupgrades", headers={"x-functions-key": key}),
        "health_details": lambda: client.get("/api/health/details", query_string={"code": key}),
        "get_campaign_summary": lambda: client.get("/api/campaigns/wave-1", headers={"x-functions-key": key}),
    }
    return int(calls[route]().status_code)


def test_the_integration_key_opens_create_eligibility_and_status_only(host: Client) -> None:
    answers = {route: call(host, route, INTEGRATION_KEY) for route in function_level_functions()}
    assert {route for route, status in answers.items() if status == 401} == function_level_functions() - (
        INTEGRATION_FUNCTIONS
    ), answers
    assert answers["create_product_upgrade"] == 202 and answers["check_product_upgrade_eligibility"] == 200


def test_the_operator_routes_take_the_operator_key_and_only_it(host: Client) -> None:
    operator_routes = function_level_functions() - INTEGRATION_FUNCTIONS
    answers = {route: call(host, route, OPERATOR_KEY) for route in function_level_functions()}
    assert {route for route, status in answers.items() if status == 401} == INTEGRATION_FUNCTIONS, answers
    assert answers["list_product_upgrades"] == 503  # reached the route: no storage in this test
    assert all(call(host, route, "wrong-key-" + "x" * 40) == 401 for route in operator_routes)


def test_a_host_key_opens_every_route_which_is_why_no_integration_gets_one(host: Client) -> None:
    assert all(call(host, route, HOST_KEY) != 401 for route in function_level_functions())


def bicep_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.bicep"), *EXAMPLES.rglob("*.bicep")])


@pytest.mark.parametrize("path", bicep_files(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_no_bicep_hands_out_a_host_key(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"/host/|functionKeys|masterKey|systemKeys", text), "a host key opens every route"


def test_the_logic_apps_example_gives_its_create_workflow_the_integration_key() -> None:
    tree = parse(EXAMPLES / "main.bicep")
    parameter = tree["parameters"]["integrationKey"]
    assert {d["type"] for d in parameter["decorators"]} >= {"secure", "min_length"}
    keyed = {
        name: r["config"].get("config", r["config"])  # a conditional resource nests its body one level down
        for name, r in tree["resources"].items()
        if r["type"] == "Microsoft.Logic/workflows" and "functionKey" in str(r)
    }
    assert keyed["createAndWait"]["properties"]["parameters"]["functionKey"] == {"value": "integrationKey"}
    # The campaign summary is a ledger route: that workflow, and only it, gets the operator key.
    assert keyed["campaignSummaryToTeams"]["properties"]["parameters"]["functionKey"] == {"value": "operatorKey"}
    assert "secure" in {d["type"] for d in tree["parameters"]["operatorKey"]["decorators"]}
