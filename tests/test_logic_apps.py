"""The Logic Apps examples (``examples/logic-apps/``): complete workflow definitions that call only what exists.

No Logic Apps runtime runs here, so the tests check the definitions' structure (the 2016-06-01 workflow
definition language), that every route they call is one of the app's HTTP routes, that the asynchronous
pattern is never switched off, and they replay what the runtime would do: the create-and-wait HTTP action's
request goes to the function app through a WSGI stand-in for the host, then Location is followed while it
answers 202 (honouring Retry-After) until the 200 that the Switch branches on; the enqueue workflow's message
is one the queue function accepts; the outcomes workflow parses the outcome messages the app writes; the campaign
workflow's summary call is answered by the app with the connector's CampaignSummary schema, and its loop ends with
the summary that says nothing runs any more.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from xml.etree import ElementTree

import jsonschema
import pytest
import requests
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import AccountSasPermissions as TableAccountSasPermissions
from azure.data.tables import ResourceTypes as TableResourceTypes
from azure.data.tables import TableServiceClient
from azure.data.tables import generate_account_sas as table_account_sas
from azure.storage.queue import AccountSasPermissions as QueueAccountSasPermissions
from azure.storage.queue import QueueClient
from azure.storage.queue import ResourceTypes as QueueResourceTypes
from azure.storage.queue import generate_account_sas as queue_account_sas
from pycep import BicepParser
from werkzeug.test import Client

from sandbox import CUSTOMER_ID
from sandbox.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from shared.settings import DEFAULTS, OUTCOMES_QUEUE_SETTING, REQUESTS_QUEUE_SETTING
from shared.store.records import UPGRADE_STATES, UpgradeRecord, utc_now
from shared.upgrades.outcomes import outcome_message
from tests.harness import Host, follow_async_pattern
from tests.wsgi_host import FunctionsWsgiApp, http_routes

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "logic-apps"
BICEP_TYPES_CHECK = REPO.parent / "shared" / "tools" / "bicep-types" / "check.py"
WORKFLOW_SCHEMA = (
    "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#"
)
WORKFLOWS = sorted(EXAMPLES.glob("*.workflow.json"))
#: Keys of a request message (the contract's Queue function section).
REQUEST_MESSAGE_KEYS = {"customerId", "productFamily", "correlationId", "requestId"}
FUNCTION_KEY = "logic-app-key"
BASE_URL = "https://func-upgrades.azurewebsites.net"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return loaded


def actions_in(scope: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every action of a definition or container action, nested ones included (Switch, Foreach, Scope, If)."""
    found: dict[str, dict[str, Any]] = {}
    containers = [scope.get("actions", {})]
    containers += [case.get("actions", {}) for case in scope.get("cases", {}).values()]
    containers += [scope.get(key, {}).get("actions", {}) for key in ("default", "else")]
    for container in containers:
        for name, action in container.items():
            found[name] = action
            found.update(actions_in(action))
    return found


def sibling_groups(scope: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
    """Each set of actions that share one scope (runAfter may only name a sibling)."""
    groups = [scope.get("actions", {})]
    groups += [case.get("actions", {}) for case in scope.get("cases", {}).values()]
    groups += [scope.get(key, {}).get("actions", {}) for key in ("default", "else")]
    nested = [group for action in [a for g in groups for a in g.values()] for group in sibling_groups(action)]
    return [g for g in groups if g] + nested


def strings_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_in(value)]
    return [node] if isinstance(node, str) else []


def route_of(uri: str) -> str | None:
    """The app route an HTTP action's uri calls (what follows ``/api/``), or None for another service."""
    match = re.search(r"/api/([^?]*)$", uri)
    return match.group(1) if match else None


def app_route_matches(method: str, route: str) -> bool:
    return any(r.pattern.match(route) and method in r.methods for r in http_routes())


# -- every workflow ------------------------------------------------------------------------------------------


def test_the_examples_are_there_and_in_the_docs():
    assert [w.name for w in WORKFLOWS] == [
        "campaign-summary-to-teams.workflow.json",
        "create-and-wait.workflow.json",
        "enqueue-request.workflow.json",
        "react-to-outcomes.workflow.json",
    ]
    page = (REPO / "docs" / "connector-and-logic-apps.md").read_text(encoding="utf-8")
    assert all(f"`{w.name}`" in page for w in WORKFLOWS)
    assert "examples/logic-apps/main.bicep" in page


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_a_complete_definition(path):
    definition = json.loads(path.read_text(encoding="utf-8"))
    assert definition["$schema"] == WORKFLOW_SCHEMA
    assert definition["contentVersion"] == "1.0.0.0"
    assert len(definition["triggers"]) == 1 and definition["actions"] and "outputs" in definition
    for name, action in actions_in(definition).items():
        assert action["type"] in {
            "Http",
            "Response",
            "Switch",
            "Foreach",
            "Compose",
            "ParseJson",
            "Until",
            "If",
            "Wait",
        }, name
        assert "runAfter" in action, name
    for group in sibling_groups(definition):
        for name, action in group.items():
            for previous, statuses in action["runAfter"].items():
                assert previous in group, f"{name} runs after {previous}, which is not beside it"
                assert set(statuses) <= {"Succeeded", "Failed", "Skipped", "TimedOut"}
    declared = set(definition.get("parameters", {}))
    used = {m for s in strings_in(definition) for m in re.findall(r"parameters\('([^']+)'\)", s)}
    assert used == declared, "parameters used and declared differ"
    referenced = {m for s in strings_in(definition) for m in re.findall(r"(?:body|outputs)\('([^']+)'\)", s)}
    assert referenced <= set(actions_in(definition)), "an expression names an action that does not exist"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_never_disables_the_asynchronous_pattern(path):
    definition = json.loads(path.read_text(encoding="utf-8"))
    assert "DisableAsyncPattern" not in path.read_text(encoding="utf-8")
    for action in actions_in(definition).values():
        assert "DisableAsyncPattern" not in action.get("operationOptions", "")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_calls_only_routes_that_exist(path):
    definition = json.loads(path.read_text(encoding="utf-8"))
    for name, action in actions_in(definition).items():
        if action["type"] == "Http" and (route := route_of(action["inputs"]["uri"])) is not None:
            assert app_route_matches(action["inputs"]["method"].upper(), route), f"{name}: {route}"


def test_route_check_can_fail():
    assert app_route_matches("POST", "productupgrades")
    assert not app_route_matches("POST", "productupgrade")
    assert not app_route_matches("DELETE", "productupgrades/abc")
    assert route_of("https://x.queue.core.windows.net/q/messages") is None


# -- create and wait: the HTTP action and the asynchronous pattern, replayed -------------------------------------

TRIGGER_BODY = {"customerId": CUSTOMER_ID, "orderId": "crm-order-1017"}
RUN_NAME = "08585000000000000000000000000CU00"
PARAMETERS = {"functionAppUrl": BASE_URL, "functionKey": FUNCTION_KEY, "notifyUrl": "https://crm.example/hooks"}


def evaluate(
    value: Any, parameters: dict[str, str], bodies: dict[str, Any] | None = None, item: dict[str, str] | None = None
) -> Any:
    """The few workflow expressions the examples use, evaluated as the runtime would; any other fails the test.
    ``item``: the Foreach's current queue message, as its XML elements' texts."""
    bodies = bodies or {}
    if isinstance(value, dict):
        return {k: evaluate(v, parameters, bodies, item) for k, v in value.items()}
    if not isinstance(value, str) or "@" not in value:
        return value

    def one(expression: str) -> Any:
        if m := re.fullmatch(r"parameters\('([^']+)'\)", expression):
            return parameters[m.group(1)]
        if m := re.fullmatch(r"triggerBody\(\)\?\['([^']+)'\]", expression):
            return TRIGGER_BODY.get(m.group(1))
        if expression == "workflow()?['run']?['name']":
            return RUN_NAME
        if m := re.fullmatch(r"body\('([^']+)'\)\?\['([^']+)'\]", expression):
            return bodies[m.group(1)].get(m.group(2))
        if m := re.fullmatch(r"body\('([^']+)'\)", expression):
            return bodies[m.group(1)]
        if m := re.fullmatch(r"outputs\('([^']+)'\)\?\['statusCode'\]", expression):
            return bodies[m.group(1)]["status"]  # a problem's status is the response's
        if m := re.fullmatch(r"toLower\(coalesce\(body\('([^']+)'\)\?\['([^']+)'\], ''\)\)", expression):
            return (bodies[m.group(1)].get(m.group(2)) or "").lower()
        if item is not None and (m := re.fullmatch(r"xpath\(item\(\), 'string\(/QueueMessage/(\w+)\)'\)", expression)):
            return item[m.group(1)]
        raise AssertionError(f"expression not understood by the test: {expression}")

    if value.startswith("@") and not value.startswith("@{"):
        return one(value[1:])
    # Interpolation writes null as an empty string.
    return re.sub(r"@\{([^}]*)\}", lambda m: "" if (v := one(m.group(1))) is None else str(v), value)


def test_create_and_wait_follows_location_to_the_end_and_branches_on_status(stored_app, monkeypatch):
    definition = load("create-and-wait.workflow.json")
    action = definition["actions"]["Upgrade_customer_to_Azure_plan"]
    assert action.get("operationOptions", "") == ""  # the asynchronous pattern is on
    assert action["inputs"]["queries"] == {"code": "@parameters('functionKey')"}  # a key the poller can follow
    parameters = PARAMETERS
    inputs = evaluate(action["inputs"], parameters)
    stored_app.partner_center.complete_after_polls(2)

    client = Client(FunctionsWsgiApp([FUNCTION_KEY]))
    uri = urlsplit(inputs["uri"])
    monkeypatch.setenv("WEBSITE_HOSTNAME", uri.netloc)  # the platform names the app's own host
    first = client.open(
        uri.path,
        base_url=f"{uri.scheme}://{uri.netloc}",
        method=inputs["method"],
        query_string=urlencode(inputs["queries"]),
        headers=inputs["headers"],
        json=inputs["body"],
    )
    assert first.status_code == 202, first.get_data(as_text=True)
    assert urlsplit(first.headers["Location"]).netloc == uri.netloc

    def get(url: str) -> Any:
        location = urlsplit(url)  # the poller sends no header of the action: the key travels in the URL
        return client.get(location.path, base_url=f"{location.scheme}://{location.netloc}", query_string=location.query)

    final, polls, waited = follow_async_pattern(first, get)
    assert final.status_code == 200 and polls == 3 and waited >= 2
    body = final.get_json()
    assert body["status"] == "Completed" and body["customerId"] == CUSTOMER_ID

    switch = definition["actions"]["Branch_on_status"]
    branch = evaluate(switch["expression"], parameters, {"Upgrade_customer_to_Azure_plan": body})
    [case] = [c for c in switch["cases"].values() if c["case"] == branch]
    [notify] = case["actions"].values()
    sent = evaluate(notify["inputs"]["body"], parameters, {"Upgrade_customer_to_Azure_plan": body})
    assert sent["outcome"] == "completed" and sent["upgradeId"] == body["upgradeId"]
    # the same order replayed (a retried run) returns the same upgrade: Idempotency-Key is the order id
    again = client.post(
        uri.path, base_url=f"{uri.scheme}://{uri.netloc}", query_string=urlencode(inputs["queries"]),
        headers=inputs["headers"], json=inputs["body"],
    )  # fmt: skip
    assert again.get_json()["upgradeId"] == body["upgradeId"]


def test_create_and_wait_passes_refusals_on(app_env):
    """A 4xx fails the HTTP action (Logic Apps retries only 408, 429 and 5xx): the refusal branch runs with the
    problem, the status branch does not."""
    definition = load("create-and-wait.workflow.json")
    refused = definition["actions"]["Tell_CRM_refused"]
    assert set(refused["runAfter"]["Upgrade_customer_to_Azure_plan"]) == {"Failed", "TimedOut"}
    assert definition["actions"]["Branch_on_status"]["runAfter"] == {"Upgrade_customer_to_Azure_plan": ["Succeeded"]}
    app_env.partner_center.set_customer_error(CUSTOMER_ID, 403, 900108, "The customer is not eligible.")
    inputs = evaluate(definition["actions"]["Upgrade_customer_to_Azure_plan"]["inputs"], PARAMETERS)
    client = Client(FunctionsWsgiApp([FUNCTION_KEY]))
    uri = urlsplit(inputs["uri"])
    response = client.post(
        uri.path, base_url=BASE_URL, query_string=urlencode(inputs["queries"]), headers=inputs["headers"],
        json=inputs["body"],
    )  # fmt: skip
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["type"].endswith(":not_eligible") and problem["partnerCenterErrorCode"] == "900108"
    sent = evaluate(refused["inputs"]["body"], PARAMETERS, {"Upgrade_customer_to_Azure_plan": problem})
    assert sent["outcome"] == "refused" and sent["problem"] == problem


# -- the queue workflows -------------------------------------------------------------------------------------


def test_enqueue_workflow_puts_a_message_the_queue_function_accepts(app_env):
    definition = load("enqueue-request.workflow.json")
    assert definition["parameters"]["requestsQueue"]["defaultValue"] == DEFAULTS[REQUESTS_QUEUE_SETTING]
    put = definition["actions"]["Put_request_on_queue"]
    assert put["inputs"]["authentication"]["type"] == "ManagedServiceIdentity"
    assert put["inputs"]["uri"].endswith("/@{parameters('requestsQueue')}/messages")
    compose = definition["actions"]["Compose_request_message"]
    assert set(compose["inputs"]) <= REQUEST_MESSAGE_KEYS
    message = evaluate(compose["inputs"], {})
    # base64(string(...)) inside <MessageText>, as the action's body does it
    assert "@{base64(string(outputs('Compose_request_message')))}" in put["inputs"]["body"]
    encoded = base64.b64encode(json.dumps(message).encode()).decode()
    result = json.loads(app_env.queue(encoded, message_id="logic-app-1"))
    assert result["status"] == "accepted" and result["error"] is None
    assert result["customerId"] == CUSTOMER_ID and result["correlationId"] == RUN_NAME
    assert result["requestId"] is None  # the caller gave none: the workflow sent "" and the app read it as absent


def test_queue_workflows_end_to_end_through_the_app(stored_app, azurite):
    """The enqueue workflow's message on the real requests queue, the host's loop running the queue and tracking
    functions, the outcome message parsed and branched on as the outcomes workflow does."""
    stored_app.partner_center.complete_after_polls(1)
    host = Host(azurite.connection_string)
    compose = load("enqueue-request.workflow.json")["actions"]["Compose_request_message"]
    message = evaluate(compose["inputs"], {}) | {"requestId": "crm-2001"}
    # What Put_request_on_queue sends as MessageText: base64 of the composed JSON.
    host.requests.send_message(base64.b64encode(json.dumps(message).encode()).decode())
    host.run_until(lambda: len(host.outcomes) >= 1, timeout=30)
    [result] = host.results
    [outcome] = host.outcomes
    assert result["status"] == "accepted" and result["requestId"] == "crm-2001"

    loop = load("react-to-outcomes.workflow.json")["actions"]["For_each_outcome"]
    schema = loop["actions"]["Parse_outcome"]["inputs"]["schema"]
    assert list(jsonschema.Draft4Validator(schema).iter_errors(outcome)) == []
    switch = not_told_yet(loop)["Branch_on_outcome"]
    assert evaluate(switch["expression"], {}, {"Parse_outcome": outcome}) == "completed"
    [case] = [c for c in switch["cases"].values() if c["case"] == "completed"]
    sent = evaluate(case["actions"]["Tell_CRM_completed"]["inputs"]["body"], {}, {"Parse_outcome": outcome})
    assert (sent["requestId"], sent["upgradeId"]) == ("crm-2001", result["upgradeId"])
    assert sent["outcomeId"] == outcome["outcomeId"]  # the CRM can key on it too
    assert sent["lineItems"] == outcome["lineItems"] and sent["lineItems"]


def test_outcomes_workflow_reads_the_outcome_message(app_env):
    definition = load("react-to-outcomes.workflow.json")
    assert definition["parameters"]["outcomesQueue"]["defaultValue"] == DEFAULTS[OUTCOMES_QUEUE_SETTING]
    loop = definition["actions"]["For_each_outcome"]
    assert "outcomeId" in loop["actions"]["Parse_outcome"]["inputs"]["schema"]["required"]
    parse = loop["actions"]["Parse_outcome"]
    schema = parse["inputs"]["schema"]
    now = utc_now()
    running = UpgradeRecord("u-1", CUSTOMER_ID, "Azure", "running", "k", now, now)
    completed = replace(
        running, state="completed", partner_center_status="Completed", request_id="crm-1", ended_at=now,
        line_items=[{"status": "Completed"}],
    )  # fmt: skip
    expired = replace(running, state="expired")  # nulls where nothing is known
    failed = replace(running, state="failed", error_details={"code": "1", "description": "no"}, ended_at=now)
    for record in (completed, expired, failed):
        message = outcome_message(record)
        assert set(schema["properties"]) == set(message)
        # what the ParseJson action would do with it
        assert list(jsonschema.Draft4Validator(schema).iter_errors(message)) == [], record.state
    assert set(schema["properties"]["outcome"]["enum"]) == set(UPGRADE_STATES) - {"running"}
    # a new outcome is deleted only after the CRM was told, and then remembered (or not: see the test below)
    new = not_told_yet(loop)
    assert new["Remember_outcome"]["runAfter"] == {"Branch_on_outcome": ["Succeeded"]}
    assert new["Delete_handled_message"]["runAfter"] == {"Remember_outcome": ["Succeeded", "Failed"]}
    for action in [definition["actions"]["Get_outcome_messages"], *actions_in(loop).values()]:
        if action["type"] == "Http" and "core.windows.net" in action["inputs"]["uri"]:
            assert action["inputs"]["authentication"]["audience"] == "https://storage.azure.com/"


def not_told_yet(loop: dict[str, Any]) -> dict[str, Any]:
    """The outcomes loop's actions for an outcomeId the CRM has not been told of (the lookup answered 404)."""
    [case] = [c for c in loop["actions"]["Told_already"]["cases"].values() if c["case"] == 404]
    actions: dict[str, Any] = case["actions"]
    return actions


def test_outcomes_workflow_tells_the_crm_once_per_outcome_id(azurite):
    """The outcomes workflow replayed against Azurite's queue and table services (an account SAS in place of the
    managed identity): copies of one outcome, in one batch and in a later run, are told to the CRM once, and every
    message is deleted. One message at a time, one run at a time: else two copies could both be found new."""
    definition = load("react-to-outcomes.workflow.json")
    loop = definition["actions"]["For_each_outcome"]
    assert loop["runtimeConfiguration"]["concurrency"]["repetitions"] == 1
    assert definition["triggers"]["Every_minute"]["runtimeConfiguration"]["concurrency"]["runs"] == 1
    suffix = uuid.uuid4().hex[:12]
    parameters = {
        "storageAccountName": "stupgrades",
        "outcomesQueue": f"outcomes-{suffix}",
        "toldTable": f"told{suffix}",
        "notifyUrl": "https://crm.example/hooks/upgrades",
    }
    assert definition["parameters"]["toldTable"]["defaultValue"] == "upgradeoutcomestold"
    queue = QueueClient.from_connection_string(azurite.connection_string, parameters["outcomesQueue"])
    queue.create_queue()
    TableServiceClient.from_connection_string(azurite.connection_string).create_table(parameters["toldTable"])
    storage = StorageByKey(azurite, parameters["notifyUrl"])
    now = utc_now()
    record = UpgradeRecord("u-1", CUSTOMER_ID, "Azure", "completed", "k", now, now, ended_at=now)
    first, other = outcome_message(record), outcome_message(replace(record, upgrade_id="u-2", state="failed"))

    def run_workflow() -> None:
        listing = storage.send(evaluate(definition["actions"]["Get_outcome_messages"]["inputs"], parameters))
        for element in ElementTree.fromstring(listing.content).findall("QueueMessage"):
            item = {child.tag: child.text or "" for child in element}
            run_actions(loop["actions"], parameters, {}, item, storage)

    for message in (first, first, other):  # a copy in the same batch
        queue.send_message(json.dumps(message, separators=(",", ":")))
    run_workflow()
    queue.send_message(json.dumps(first, separators=(",", ":")))  # a copy sent later (the lease path)
    run_workflow()
    assert [(t["outcomeId"], t["outcome"]) for t in storage.told] == [
        (first["outcomeId"], "completed"),
        (other["outcomeId"], "failed"),
    ]
    assert storage.deleted == 4 and queue.get_queue_properties().approximate_message_count == 0


class StorageByKey:
    """Sends a workflow's HTTP actions: storage calls to Azurite (the account's host mapped to Azurite's endpoint,
    an account SAS in place of the managed identity), the CRM's webhook collected in ``told``."""

    def __init__(self, azurite: Any, notify_url: str) -> None:
        expiry = utc_now() + timedelta(hours=1)
        key = AzureNamedKeyCredential(ACCOUNT_NAME, ACCOUNT_KEY)
        self.sas = {
            "queue": queue_account_sas(
                ACCOUNT_NAME, ACCOUNT_KEY, QueueResourceTypes(object=True, container=True, service=True),
                QueueAccountSasPermissions(read=True, add=True, update=True, process=True, delete=True), expiry,
            ),
            "table": table_account_sas(
                key, TableResourceTypes(object=True, container=True, service=True),
                TableAccountSasPermissions(read=True, add=True, update=True, write=True), expiry=expiry,
            ),
        }  # fmt: skip
        self.ports = {"queue": azurite.queue_port, "table": azurite.table_port}
        self.notify_url = notify_url
        self.told: list[dict[str, Any]] = []
        self.deleted = 0

    def send(self, inputs: dict[str, Any]) -> Any:
        if inputs["uri"] == self.notify_url:
            self.told.append(inputs["body"])
            return SimpleNamespace(status_code=200, content=b"")
        m = re.fullmatch(r"https://[a-z0-9]+\.(queue|table)\.core\.windows\.net/(.*)", inputs["uri"])
        assert m, inputs["uri"]
        service, path = m.groups()
        assert inputs["authentication"] == {"type": "ManagedServiceIdentity", "audience": "https://storage.azure.com/"}
        url = f"http://127.0.0.1:{self.ports[service]}/{ACCOUNT_NAME}/{path}?{self.sas[service]}"
        body = inputs.get("body")
        response = requests.request(
            inputs["method"], url, params=inputs.get("queries"), headers=inputs.get("headers"),
            data=body if isinstance(body, str) else None, json=body if isinstance(body, dict) else None, timeout=10,
        )  # fmt: skip
        self.deleted += inputs["method"] == "DELETE" and response.status_code == 204
        return response


def run_actions(
    actions: dict[str, Any], parameters: dict[str, str], bodies: dict[str, Any], item: dict[str, str], storage: Any
) -> None:
    """One scope's actions in runAfter order, as the runtime runs them: an action runs once those it names have
    ended with one of the statuses it names (an HTTP action fails on a status of 400 or more)."""
    ended: dict[str, str] = {}
    while ready := [
        name
        for name, action in actions.items()
        if name not in ended and all(ended.get(before) in after for before, after in action["runAfter"].items())
    ]:
        for name in ready:
            action = actions[name]
            if action["type"] == "ParseJson":
                bodies[name] = json.loads(evaluate(action["inputs"]["content"], parameters, bodies, item))
                ended[name] = "Succeeded"
            elif action["type"] == "Http":
                response = storage.send(evaluate(action["inputs"], parameters, bodies, item))
                bodies[name] = {"status": response.status_code}
                ended[name] = "Failed" if response.status_code >= 400 else "Succeeded"
            else:
                assert action["type"] == "Switch", name
                value = evaluate(action["expression"], parameters, bodies, item)
                chosen = [c for c in action["cases"].values() if c["case"] == value]
                scope = chosen[0] if chosen else action.get("default", {"actions": {}})
                run_actions(scope["actions"], parameters, bodies, item, storage)
                ended[name] = "Succeeded"


# -- the Bicep beside them -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bicep() -> dict[str, Any]:
    tree: dict[str, Any] = BicepParser().parse(text=(EXAMPLES / "main.bicep").read_text(encoding="utf-8"))
    return tree


def test_bicep_deploys_each_workflow_with_the_parameters_it_declares(bicep):
    text = (EXAMPLES / "main.bicep").read_text(encoding="utf-8")
    workflows = {
        # a conditional resource (``= if (...) {...}``) nests its body one level down
        name: resource["config"].get("config", resource["config"])
        for name, resource in bicep["resources"].items()
        if resource["type"] == "Microsoft.Logic/workflows"
    }
    assert len(workflows) == 4
    loaded = set(re.findall(r"loadJsonContent\('([^']+)'\)", text))
    assert loaded == {w.name for w in WORKFLOWS}
    for config in workflows.values():
        loader = config["properties"]["definition"]["function"]
        assert loader["type"] == "load_json_content"
        file_name = loader["parameters"]["file_path"]
        declared = load(file_name)["parameters"]
        required = {name for name, p in declared.items() if "defaultValue" not in p}
        passed = set(config["properties"]["parameters"])
        assert required <= passed <= set(declared), file_name


def test_bicep_grants_each_workflow_only_its_queue_and_table(bicep):
    assignments = [r["config"] for r in bicep["resources"].values() if "roleAssignments" in r["type"]]
    scopes = sorted(a["scope"] for a in assignments)
    assert scopes == ["outcomesQueue", "requestsQueue", "toldTable"]


def test_bicep_types_check_passes():
    if not BICEP_TYPES_CHECK.is_file():
        pytest.skip(f"bicep-types checker not found at {BICEP_TYPES_CHECK} (../shared is not beside the repo)")
    out = subprocess.run(
        [sys.executable, str(BICEP_TYPES_CHECK), str(EXAMPLES / "main.bicep")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# -- the campaign summary, posted to Teams every hour until nothing runs -------------------------------------------

CAMPAIGN_WORKFLOW = "campaign-summary-to-teams.workflow.json"
TEAMS_PARAMETERS = {"functionAppUrl": BASE_URL, "functionKey": FUNCTION_KEY, "teamsWebhookUrl": "https://teams.example"}


def evaluate_campaign(value: Any, trigger: dict[str, Any], summary: dict[str, Any] | None) -> Any:
    """The campaign workflow's expressions, as the runtime evaluates them (null-safe ``?[]``); any other fails."""
    if isinstance(value, dict):
        return {k: evaluate_campaign(v, trigger, summary) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate_campaign(v, trigger, summary) for v in value]
    if not isinstance(value, str) or "@" not in value:
        return value

    def path(node: Any, keys: str) -> Any:
        for key in re.findall(r"\?\['([^']+)'\]", keys):
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def one(expression: str) -> Any:
        if m := re.fullmatch(r"parameters\('([^']+)'\)", expression):
            return TEAMS_PARAMETERS[m.group(1)]
        if m := re.fullmatch(r"triggerBody\(\)((?:\?\['[^']+'\])+)", expression):
            return path(trigger, m.group(1))
        if m := re.fullmatch(r"encodeUriComponent\((.+)\)", expression):
            return quote(str(one(m.group(1))), safe="")
        if m := re.fullmatch(r"body\('Get_campaign_summary'\)((?:\?\['[^']+'\])+)", expression):
            return path(summary, m.group(1))
        if m := re.fullmatch(r"not\((.+)\)", expression):
            return not one(m.group(1))
        if m := re.fullmatch(r"equals\((.+), (\d+)\)", expression):
            return one(m.group(1)) == int(m.group(2))
        raise AssertionError(f"expression not understood by the test: {expression}")

    if value.startswith("@") and not value.startswith("@{"):
        return one(value[1:])
    return re.sub(r"@\{([^}]*)\}", lambda m: "" if (v := one(m.group(1))) is None else str(v), value)


def campaign_summary_schema() -> dict[str, Any]:
    """The operators' connector's CampaignSummary as JSON Schema: OpenAPI 2.0's ``x-nullable`` becomes ``null``."""
    path = REPO / "connector" / "operator" / "apiDefinition.swagger.json"
    definition = json.loads(path.read_text(encoding="utf-8"))

    def nullable(node: Any) -> Any:
        if isinstance(node, list):
            return [nullable(item) for item in node]
        if not isinstance(node, dict):
            return node
        converted = {key: nullable(value) for key, value in node.items() if key != "x-nullable"}
        if node.get("x-nullable") and "type" in node:
            converted["type"] = [node["type"], "null"]
        return converted

    return nullable(definition["definitions"]["CampaignSummary"])  # type: ignore[no-any-return]


def test_campaign_workflow_posts_the_summary_every_hour_until_nothing_runs(stored_app, azurite):
    """The loop replayed against the app: the summary call as the HTTP action makes it (function key in the header),
    its 200 held to the connector's CampaignSummary schema, the card posted from it, an hour's wait while upgrades
    run, and the loop's end with the summary that says none does."""
    definition = load(CAMPAIGN_WORKFLOW)
    trigger = definition["triggers"]["When_a_campaign_is_started"]
    assert trigger["operationOptions"] == "EnableSchemaValidation"
    names = jsonschema.Draft4Validator(trigger["inputs"]["schema"])
    assert names.is_valid({"campaign": "Wave 1.b"}) and not names.is_valid({"campaign": "-x"})
    loop = definition["actions"]["Until_no_upgrade_runs"]
    get, post, wait = (
        loop["actions"][n] for n in ("Get_campaign_summary", "Post_summary_to_Teams", "While_upgrades_run")
    )
    assert wait["actions"]["Wait_an_hour"]["inputs"] == {"interval": {"count": 1, "unit": "Hour"}}
    assert post["inputs"]["uri"] == "@parameters('teamsWebhookUrl')"

    stored_app.partner_center.complete_after_polls(2)
    host = Host(azurite.connection_string)
    for n in range(3):
        host.send_request({"customerId": str(uuid.UUID(int=0x7EA5 << 64 | n)), "campaign": "Wave 1.b"})
    host.run_until(lambda: len(host.results) == 3, timeout=30)
    client = Client(FunctionsWsgiApp([FUNCTION_KEY]))
    schema = campaign_summary_schema()
    trigger_body = {"campaign": "Wave 1.b"}

    def iteration() -> tuple[dict[str, Any], bool, bool]:
        """One pass of the loop: the summary, whether the If waits an hour, whether the Until ends."""
        inputs = evaluate_campaign(get["inputs"], trigger_body, None)
        uri = urlsplit(inputs["uri"])
        assert uri.path == "/api/campaigns/Wave%201.b" and inputs["method"] == "GET"
        response = client.get(uri.path, base_url=f"{uri.scheme}://{uri.netloc}", headers=inputs["headers"])
        assert response.status_code == 200, response.get_data(as_text=True)
        summary = response.get_json()
        assert list(jsonschema.Draft4Validator(schema).iter_errors(summary)) == []
        card = evaluate_campaign(post["inputs"]["body"], trigger_body, summary)
        content = card["attachments"][0]["content"]
        assert card["type"] == "message" and content["type"] == "AdaptiveCard"
        running, upgrades = summary["counts"]["running"], summary["upgrades"]
        assert content["body"][0]["text"] == f"Campaign {summary['campaign']}: {running} of {upgrades} upgrades running"
        facts = {fact["title"]: fact["value"] for fact in content["body"][1]["facts"]}
        assert facts["Completed"] == str(summary["counts"]["completed"])
        waits = evaluate_campaign(wait["expression"], trigger_body, summary)
        ends = evaluate_campaign(loop["expression"], trigger_body, summary)
        return summary, waits, ends

    summary, waits, ends = iteration()
    assert summary["counts"]["running"] == 3 and waits and not ends
    host.run_until(lambda: len(host.outcomes) == 3, timeout=30)
    summary, waits, ends = iteration()
    assert summary["counts"]["completed"] == 3 and summary["counts"]["running"] == 0
    assert ends and not waits  # the last summary posted, no hour's wait: the loop ends

    # Before the campaign's first upgrade: 404, no card, and the loop waits an hour and asks again.
    missing = evaluate_campaign(get["inputs"], {"campaign": "wave-9"}, None)
    uri = urlsplit(missing["uri"])
    assert client.get(uri.path, base_url=BASE_URL, headers=missing["headers"]).status_code == 404
    assert (
        post["runAfter"] == {"Get_campaign_summary": ["Succeeded"]}
        and "Skipped" in wait["runAfter"]["Post_summary_to_Teams"]
    )
    assert evaluate_campaign(wait["expression"], {}, {}) and not evaluate_campaign(loop["expression"], {}, {})
