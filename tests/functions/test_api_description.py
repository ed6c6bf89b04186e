"""The connector's API definition: one description of the app's HTTP API, valid, served, and true to the app.

- The definition's operations are the app's HTTP routes and methods, both ways (less health and openapi.json),
  and its schemas carry the keys the package's models write.
- ``GET /api/openapi.json`` serves the same file with the app's public host.
- The connector files pass an OpenAPI 2.0 validator and the Power Platform connector schemas stored in
  ``../shared/schemas`` (skipped with a reason when that folder is absent).
"""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path
from typing import Any

import jsonschema
import pathspec
import pytest
from jsonschema_specifications import REGISTRY as METASCHEMAS
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from shared.errors import ValidationError
from shared.functions import api_description, http_api
from shared.models import (
    ErrorDetails,
    ProductUpgradeRequest,
    ProductUpgradesEligibility,
    ProductUpgradesStatus,
    UpgradeProduct,
    UpgradesLineItem,
)
from shared.settings import PUBLIC_URL_SETTING
from shared.store.campaign_counts import COUNTED_STATES, CampaignCounts, CountedUpgrade
from shared.store.ledger import MAX_PAGE_SIZE
from shared.store.records import UPGRADE_STATES, UpgradeRecord, utc_now
from shared.upgrades import campaigns
from tests.harness import indexed_functions

REPO = Path(__file__).resolve().parents[2]
CONNECTOR = REPO / "connector"
SCHEMAS = REPO.parent / "shared" / "schemas" / "power-platform-connectors"
#: HTTP routes in neither connector: health (anonymous, and its details for operators' probes) and the description.
UNDESCRIBED_ROUTES = {"health", "health/details", "openapi.json"}
#: The integrations' connector (connector/): what the integration key opens.
OPERATION_IDS = {
    "CreateProductUpgrade",
    "CheckProductUpgradeEligibility",
    "GetProductUpgradeStatus",
}
#: The operators' connector (connector/operator/): the ledger's routes, opened by the operator key.
OPERATOR_OPERATION_IDS = {"ListProductUpgrades", "GetCampaignSummary"}
#: Which functions each key opens (infra/keys.bicep reads the same file).
ACCESS = json.loads((REPO / "infra" / "app" / "function-access.json").read_text(encoding="utf-8"))
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch"}


def load(name: str) -> Any:
    return json.loads((CONNECTOR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def definition() -> Any:
    return load("apiDefinition.swagger.json")


@pytest.fixture(scope="module")
def operator_definition() -> Any:
    return load("operator/apiDefinition.swagger.json")


@pytest.fixture(params=["integration", "operator"])
def any_definition(request, definition, operator_definition) -> Any:
    return definition if request.param == "integration" else operator_definition


def operations(definition: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, route without /api) -> operation object."""
    return {
        (method.upper(), path.lstrip("/")): operation
        for path, item in definition["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def app_routes(functions: set[str] | None = None) -> set[tuple[str, str]]:
    """(METHOD, route) of every HTTP function the app indexes (of ``functions`` only, when given)."""
    routes = set()
    for name, function in indexed_functions().items():
        if functions is not None and name not in functions:
            continue
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding["type"] == "httpTrigger":
                routes |= {(method.upper(), binding["route"]) for method in binding["methods"]}
    return routes


def schema_of(definition: Any, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = definition["definitions"][name]
    return schema


# -- one source of truth: routes and models --------------------------------------------------------------


def test_every_app_route_is_an_operation_and_every_operation_a_route(definition, operator_definition):
    described = set(operations(definition)) | set(operations(operator_definition))
    served = {(method, route) for method, route in app_routes() if route not in UNDESCRIBED_ROUTES}
    assert described - served == set(), "operations the app does not serve"
    assert served - described == set(), "routes the connector does not describe"
    assert {("GET", "health"), ("GET", "openapi.json")} <= app_routes()


def test_the_integrations_connector_describes_only_what_the_integration_key_opens(definition):
    # Any flow maker sharing the connection holds its key: the ledger (every customer, upgrade and order id)
    # stays out of it.
    assert set(operations(definition)) <= app_routes(set(ACCESS["integration"]))
    assert not set(operations(definition)) & app_routes(set(ACCESS["operator"]))
    assert "integration key" in definition["securityDefinitions"]["api_key"]["description"]


def test_the_operators_connector_describes_only_what_the_operator_key_opens(operator_definition):
    assert set(operations(operator_definition)) <= app_routes(set(ACCESS["operator"]))
    assert "operator key" in operator_definition["securityDefinitions"]["api_key"]["description"]


def test_operation_ids_and_connector_essentials(definition, operator_definition):
    assert {op["operationId"] for op in operations(definition).values()} == OPERATION_IDS
    assert {op["operationId"] for op in operations(operator_definition).values()} == OPERATOR_OPERATION_IDS
    for described in (definition, operator_definition):
        check_connector_essentials(described)


def check_connector_essentials(definition: Any) -> None:
    ops = operations(definition)
    assert definition["swagger"] == "2.0" and definition["basePath"] == "/api" and definition["schemes"] == ["https"]
    assert definition["securityDefinitions"] == {
        "api_key": {
            "type": "apiKey",
            "in": "header",
            "name": "x-functions-key",
            "description": definition["securityDefinitions"]["api_key"]["description"],
        }
    }
    assert definition["security"] == [{"api_key": []}]
    for (method, route), op in ops.items():
        assert op["summary"] and op["description"], (method, route)
        for parameter in op.get("parameters", []):
            assert parameter["x-ms-summary"] and parameter["description"], (route, parameter["name"])
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and status != "401" or status == "default":
                assert response["schema"] == {"$ref": "#/definitions/Problem"}, (route, status)
        assert "application/problem+json" in op["produces"]


def test_connector_page_names_each_operation_and_the_import_commands(definition, operator_definition):
    page = (REPO / "docs" / "connector-and-logic-apps.md").read_text(encoding="utf-8")
    for op in [*operations(definition).values(), *operations(operator_definition).values()]:
        assert f"`{op['operationId']}`" in page and op["summary"] in page
    assert "paconn create --settings connector/settings.json" in page and "/api/openapi.json" in page
    assert "paconn create --settings connector/operator/settings.json" in page


def test_create_and_status_declare_the_asynchronous_pattern(definition):
    ops = operations(definition)
    create = ops[("POST", "productupgrades")]["responses"]
    assert set(create["202"]["headers"]) >= {"Location"}
    assert create["202"]["schema"] == {"$ref": "#/definitions/ProductUpgradeAccepted"}
    # What the action gives once the pattern has followed Location to the end.
    assert create["200"]["schema"] == {"$ref": "#/definitions/ProductUpgradeStatus"}
    status = ops[("GET", "productupgrades/{upgradeId}")]["responses"]
    assert set(status["202"]["headers"]) >= {"Location", "Retry-After"}
    assert status["200"]["schema"] == status["202"]["schema"] == {"$ref": "#/definitions/ProductUpgradeStatus"}
    assert "Retry-After" in create["503"]["headers"]


def properties(definition: Any, name: str) -> set[str]:
    return set(schema_of(definition, name)["properties"])


def test_schemas_carry_the_keys_the_models_write(definition):
    request = ProductUpgradeRequest("4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a")
    # The create body: Partner Center's request, and the campaign it belongs to.
    assert properties(definition, "ProductUpgradeRequest") == set(request.to_json()) | {"campaign"}
    eligibility = ProductUpgradesEligibility(request.customer_id, "Azure", True)
    assert properties(definition, "ProductUpgradeEligibility") == set(eligibility.to_json())
    assert set(schema_of(definition, "ProductUpgradeEligibility")["required"]) == set(eligibility.to_json())
    status = ProductUpgradesStatus("u-1", "Azure", "Completed")
    status_keys = {"upgradeId", "customerId", *status.to_json()}
    assert properties(definition, "ProductUpgradeStatus") == status_keys
    assert set(schema_of(definition, "ProductUpgradeStatus")["required"]) == status_keys
    line_item = UpgradesLineItem(None, None, None, None, None)
    assert properties(definition, "UpgradesLineItem") == set(line_item.to_json())
    assert properties(definition, "UpgradeProduct") == set(UpgradeProduct(None, None).to_json())
    assert properties(definition, "ErrorDetails") == set(ErrorDetails(None, None).to_json())


def test_list_schema_carries_the_ledgers_item_and_limits(operator_definition):
    definition = operator_definition
    now = utc_now()
    record = UpgradeRecord("u-1", "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a", "Azure", "running", "k", now, now)
    item = schema_of(definition, "TrackedProductUpgrade")
    assert set(item["properties"]) == set(item["required"]) == set(record.to_json())
    assert item["properties"]["state"]["enum"] == list(UPGRADE_STATES)
    parameters = {p["name"]: p for p in operations(definition)[("GET", "productupgrades")]["parameters"]}
    assert parameters["state"]["enum"] == list(UPGRADE_STATES)
    assert (parameters["top"]["minimum"], parameters["top"]["maximum"]) == (1, MAX_PAGE_SIZE)
    assert parameters["top"]["default"] == http_api.DEFAULT_PAGE_SIZE
    assert set(schema_of(definition, "ProductUpgradePage")["properties"]) == {"items", "continuationToken"}
    assert parameters["campaign"]["pattern"] == campaigns.NAME_PATTERN


def test_campaign_summary_schema_carries_the_summarys_keys(operator_definition):
    definition = operator_definition
    counts = CampaignCounts("wave-1")
    counts.add(CountedUpgrade("k", "wave-1", "wave-1", "completed", "2026-11-20T09:00:00.000Z", None, 12.0))
    document = campaigns.summary(counts, utc_now())
    schema = schema_of(definition, "CampaignSummary")
    assert set(schema["properties"]) == set(schema["required"]) == set(document)
    counts_schema = schema["properties"]["counts"]
    assert set(counts_schema["properties"]) == set(counts_schema["required"]) == set(document["counts"])
    assert list(document["counts"]) == list(COUNTED_STATES)
    summary = operations(definition)[("GET", "campaigns/{name}")]
    [name] = summary["parameters"]
    assert (name["in"], name["pattern"], name["maxLength"]) == ("path", campaigns.NAME_PATTERN, campaigns.MAX_NAME)
    assert summary["responses"]["200"]["schema"] == {"$ref": "#/definitions/CampaignSummary"}
    assert "Retry-After" in summary["responses"]["503"]["headers"] and "404" in summary["responses"]


def test_campaign_name_pattern_is_the_naming_rule(definition):
    """The schema's pattern accepts exactly what the rule accepts, so generated names mean the same to both."""
    pattern = re.compile(schema_of(definition, "ProductUpgradeRequest")["properties"]["campaign"]["pattern"])
    for name in ("wave-1", "Spring 2027.b_2", "a" * 64, "9", "a" * 65, "-x", " x", "x/y", "été", "", "x\n"):
        try:
            campaigns.parse_campaign(name)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == bool(pattern.fullmatch(name)), name


def test_problem_schema_covers_what_the_adapter_writes(definition):
    response = http_api.problem(
        503, "t", "d", code="c", correlation_id="x", partner_center_error_code="900130", retry_after=5
    )
    written = set(json.loads(response.get_body()))
    problem = schema_of(definition, "Problem")
    assert written <= set(problem["properties"])
    assert set(problem["required"]) <= written
    assert problem["properties"]["type"]["description"]
    assert http_api.PROBLEM_TYPE_BASE.startswith("urn:")


def test_problem_schema_covers_partner_centers_error_data_and_source(any_definition):
    from shared.errors import PartnerCenterError

    error = PartnerCenterError(403, "900105", "Suspended.", data=[{"id": "s-1"}], source="PartnerFD")
    response = http_api.problem(
        422,
        "t",
        "d",
        code="not_eligible",
        correlation_id="x",
        partner_center_error_code="900105",
        partner_center_error=error,
    )
    written = json.loads(response.get_body())
    assert (written["partnerCenterErrorData"], written["partnerCenterErrorSource"]) == ([{"id": "s-1"}], "PartnerFD")
    assert set(written) <= set(schema_of(any_definition, "Problem")["properties"])


def test_the_operators_connector_lists_the_partial_state(operator_definition):
    item = schema_of(operator_definition, "TrackedProductUpgrade")
    parameters = {p["name"]: p for p in operations(operator_definition)[("GET", "productupgrades")]["parameters"]}
    assert "partial" in item["properties"]["state"]["enum"] and "partial" in parameters["state"]["enum"]
    assert "partial" in item["properties"]["state"]["description"]


def test_request_schema_accepts_what_the_model_accepts(definition):
    validator = jsonschema.Draft4Validator(schema_of(definition, "ProductUpgradeRequest"))
    assert validator.is_valid({"customerId": "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a"})
    assert validator.is_valid({"customerId": "4c7b3e5a-0d3c-4f43-9a0e-3b0f6e5d2c1a", "productFamily": "Azure"})
    assert not validator.is_valid({"productFamily": "Azure"})


# -- the served description -------------------------------------------------------------------------------


@pytest.fixture
def no_public_host(monkeypatch):
    monkeypatch.delenv(PUBLIC_URL_SETTING, raising=False)
    monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)


def served(app_env) -> Any:
    response = app_env.http("openapi_definition", "GET", "/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return json.loads(response.get_body())


def without_location(document: Any) -> Any:
    return {k: v for k, v in document.items() if k not in {"host", "basePath", "schemes"}}


def test_served_description_is_the_connector_file_with_the_request_host_locally(app_env, no_public_host, definition):
    document = served(app_env)
    assert (document["host"], document["basePath"], document["schemes"]) == ("upgrades.example.net", "/api", ["https"])
    assert without_location(document) == without_location(definition)
    validate_openapi(document)


def test_served_description_uses_website_hostname_in_azure(app_env, no_public_host, monkeypatch):
    monkeypatch.setenv("WEBSITE_HOSTNAME", "func-upgrades.azurewebsites.net")
    document = served(app_env)
    assert (document["host"], document["basePath"], document["schemes"]) == (
        "func-upgrades.azurewebsites.net",
        "/api",
        ["https"],
    )


def test_served_description_prefers_the_public_url(app_env, no_public_host, monkeypatch):
    monkeypatch.setenv("WEBSITE_HOSTNAME", "func-upgrades.azurewebsites.net")
    monkeypatch.setenv(PUBLIC_URL_SETTING, "https://apim.contoso.com/upgrades/")
    document = served(app_env)
    assert (document["host"], document["basePath"], document["schemes"]) == ("apim.contoso.com", "/upgrades", ["https"])
    validate_openapi(document)


def test_served_description_never_takes_the_clients_host_in_azure(app_env, no_public_host, monkeypatch):
    monkeypatch.setenv("WEBSITE_HOSTNAME", "func-upgrades.azurewebsites.net")
    response = app_env.http(
        "openapi_definition", "GET", "/api/openapi.json", headers={"X-Forwarded-Host": "evil.example"}
    )
    assert json.loads(response.get_body())["host"] == "func-upgrades.azurewebsites.net"


def test_a_malformed_public_url_is_a_500_naming_the_setting(app_env, no_public_host, monkeypatch):
    monkeypatch.setenv(PUBLIC_URL_SETTING, "apim.contoso.com/upgrades")
    response = app_env.http("openapi_definition", "GET", "/api/openapi.json")
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    assert PUBLIC_URL_SETTING in json.loads(response.get_body())["detail"]


def test_the_description_needs_no_settings(monkeypatch, app_env, no_public_host):
    monkeypatch.delenv("PARTNER_CENTER_TENANT_ID")
    assert served(app_env)["paths"]


def test_the_route_is_anonymous_and_get_only():
    [trigger] = [
        b
        for b in json.loads(indexed_functions()["openapi_definition"].get_function_json())["bindings"]
        if b["type"] == "httpTrigger"
    ]
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == ("openapi.json", ["GET"], "ANONYMOUS")


def test_the_definition_is_deployed_with_the_app():
    """``.funcignore`` (gitignore syntax) keeps what the route reads and leaves the connector's other files out."""
    ignored = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text(encoding="utf-8").splitlines())
    deployed = api_description.DEFINITION_PATH.relative_to(REPO).as_posix()
    assert not ignored.match_file(deployed)
    assert not ignored.match_file("shared/functions/api_description.py") and not ignored.match_file("function_app.py")
    for name in ("connector/apiProperties.json", "connector/settings.json", "connector/icon.png"):
        assert ignored.match_file(name), name
    for name in ("apiDefinition.swagger.json", "apiProperties.json", "settings.json"):
        assert ignored.match_file(f"connector/operator/{name}"), name
    assert ignored.match_file("examples/logic-apps/create-and-wait.workflow.json")


# -- validators ----------------------------------------------------------------------------------------------


def test_definition_passes_the_openapi_2_validator(any_definition):
    validate_openapi(any_definition)


def test_openapi_validator_rejects_a_broken_definition(definition):
    broken = copy.deepcopy(definition)
    # A path parameter that the path template does not declare.
    broken["paths"]["/productupgrades/{upgradeId}"]["get"]["parameters"][0]["name"] = "id"
    with pytest.raises(OpenAPIValidationError):
        validate_openapi(broken)


def strip_json_comments(text: str) -> str:
    """Drop ``//`` comments outside strings (the upstream connector schemas are JSON with comments)."""
    out: list[str] = []
    i, in_string = 0, False
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(text[i : i + 2] if char == "\\" else char)
            i += 2 if char == "\\" else 1
            in_string = char != '"'
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        in_string = char == '"'
        out.append(char)
        i += 1
    return "".join(out)


def test_strip_json_comments_keeps_strings():
    text = '{"a": "http://x//y", "b": "q\\"//"} // note\n'
    assert json.loads(strip_json_comments(text)) == {"a": "http://x//y", "b": 'q"//'}


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # never fetch: every schema must be stored


@pytest.fixture(scope="module")
def power_platform() -> dict[str, jsonschema.protocols.Validator]:
    if not SCHEMAS.is_dir():
        pytest.skip(f"Power Platform connector schemas not found at {SCHEMAS} (../shared is not beside the repo)")
    validators = {}
    for name, schema_file in {
        "apiDefinition": "apiDefinition.swagger.schema.json",
        "apiProperties": "paconn-apiProperties.schema.json",
    }.items():
        schema = json.loads(strip_json_comments((SCHEMAS / schema_file).read_text(encoding="utf-8")))
        uri = schema["id"].rstrip("#")
        registry = Registry(retrieve=_offline).with_resource(uri, Resource.from_contents(schema)).combine(METASCHEMAS)
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validators[name] = cls(schema, registry=registry)
    return validators


def errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def test_definition_passes_the_power_platform_schema(power_platform, any_definition):
    assert errors(power_platform["apiDefinition"], any_definition) == []


def test_power_platform_schema_rejects_a_wrong_extension(power_platform, definition):
    broken = copy.deepcopy(definition)
    broken["paths"]["/productupgrades"]["post"]["parameters"][1]["x-ms-visibility"] = "sometimes"
    assert errors(power_platform["apiDefinition"], broken)


@pytest.mark.parametrize("folder", ["", "operator/"])
def test_api_properties_pass_the_paconn_schema(power_platform, folder):
    properties = load(f"{folder}apiProperties.json")
    assert errors(power_platform["apiProperties"], properties) == []
    broken = copy.deepcopy(properties)
    broken["properties"]["connectionParameters"]["api_key"]["uiDefinition"]["constraints"]["required"] = True
    assert errors(power_platform["apiProperties"], broken)


@pytest.mark.parametrize(("folder", "key"), [("", "Integration key"), ("operator/", "Operator key")])
def test_api_properties_ask_for_the_key_the_definition_sends(folder, key):
    definition = load(f"{folder}apiDefinition.swagger.json")
    parameters = load(f"{folder}apiProperties.json")["properties"]["connectionParameters"]
    assert set(parameters) == set(definition["securityDefinitions"]) == {"api_key"}
    assert parameters["api_key"]["type"] == "securestring"
    assert parameters["api_key"]["uiDefinition"]["displayName"] == key


@pytest.mark.parametrize("folder", ["", "operator/"])
def test_paconn_settings_point_at_the_connector_files(folder):
    settings = load(f"{folder}settings.json")
    assert settings["apiDefinition"] == f"connector/{folder}apiDefinition.swagger.json"
    for key in ("apiProperties", "apiDefinition", "icon"):
        assert (REPO / settings[key]).is_file(), key
    assert settings["connectorId"] is None and settings["environment"] is None  # paconn asks; never committed
    icon = (REPO / settings["icon"]).read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", icon[16:24])
    assert width == height and width <= 500 and len(icon) < 1024 * 1024
