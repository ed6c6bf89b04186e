"""Structure of infra/ (Bicep), asserted on pycep's parse tree: no Bicep compiler is needed.

pycep renders identifiers and string literals alike as plain strings (``name: tableName`` and
``name: 'tableName'`` both give ``"tableName"``), keeps interpolations as ``"${...}"`` text, and drops comments.
checkov (``.ci/infra-check``) sees only our own ``resource`` blocks; what lives in registry-module parameters
(AVM) is asserted here.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from shared.settings import (
    ALL_SETTINGS,
    APP_ID_SECRET_NAME_SETTING,
    APP_SECRET_SECRET_NAME_SETTING,
    DEFAULTS,
    MAX_ATTEMPTS_SETTING,
    REFRESH_TOKEN_SECRET_NAME_SETTING,
    REQUESTS_QUEUE_SETTING,
    RESULTS_QUEUE_SETTING,
    SECRET_SETTINGS,
    STORAGE_ACCOUNT_NAME_SETTING,
    STORAGE_CLIENT_ID_SETTING,
    STORAGE_CREDENTIAL_SETTING,
    STORAGE_SETTING,
    TABLE_SETTING,
)

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in role definition ids, by role name.
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Reader": "19e7f393-937e-4f77-808e-94535e297925",
    "Storage Queue Data Message Processor": "8a0f0c08-91a1-4084-bc3d-661d67233fed",
    "Storage Queue Data Message Sender": "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}


@functools.cache
def parse(relative: str) -> dict[str, Any]:
    """The parse tree of ``infra/<relative>``; a file pycep cannot parse raises (and so fails the test)."""
    return BicepParser().parse(text=(INFRA / relative).read_text(encoding="utf-8"))


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a resource or module, unwrapped from ``if (...)`` and ``[for ...]``."""
    config = declaration["config"]
    while isinstance(config.get("config"), dict) and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(declaration: dict[str, Any]) -> Any:
    return declaration["config"].get("condition")


def resources_of_type(tree: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in tree.get("resources", {}).items()
        if resource["type"] == resource_type and not resource["existing"]
    }


def only(items: dict[str, Any]) -> Any:
    assert len(items) == 1, f"expected exactly one, got {sorted(items)}"
    return next(iter(items.values()))


def is_secure(parameter: dict[str, Any]) -> bool:
    return any(decorator["type"] == "secure" for decorator in parameter["decorators"])


def has_default(parameter: dict[str, Any]) -> bool:
    return parameter.get("default") is not None


def not_empty(name: str) -> dict[str, Any]:
    """The parse tree of ``!empty(name)``."""
    return {
        "operator": {
            "type": "not",
            "operands": {"bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": name}}}},
        }
    }


def function_app() -> dict[str, Any]:
    return body(only(resources_of_type(parse("app/api.bicep"), "Microsoft.Web/sites")))


def app_settings() -> dict[str, Any]:
    settings = function_app()["properties"]["siteConfig"]["appSettings"]
    names = [setting["name"] for setting in settings]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {setting["name"]: setting["value"] for setting in settings}


def main_variable(name: str) -> Any:
    return parse("main.bicep")["variables"][name]["value"]


def module_params(relative: str, module: str) -> dict[str, Any]:
    return body(parse(relative)["modules"][module])["params"]


# Parsing


def test_infra_has_the_expected_files() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/rbac.bicep", "app/keyvault.bicep", "app/storage.bicep"} <= names
    assert (INFRA / "main.parameters.json").is_file()
    assert (INFRA / "abbreviations.json").is_file()


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parse(path.relative_to(INFRA).as_posix())
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


def test_a_parse_error_fails_loudly() -> None:
    # The guard for the test above: pycep raises on malformed Bicep instead of returning a partial tree.
    with pytest.raises(Exception, match="(?i)unexpected"):
        BicepParser().parse(text="resource broken 'Microsoft.Web/sites@2024-04-01' = {\n  name: \n")


def test_local_modules_exist() -> None:
    for path in BICEP_FILES:
        tree = parse(path.relative_to(INFRA).as_posix())
        for name, module in tree.get("modules", {}).items():
            if module["type"] == "local":
                target = path.parent / module["detail"]["path"]
                assert target.is_file(), f"{path.name}: module {name} points at missing {target}"


def test_registry_modules_are_pinned_azure_verified_modules() -> None:
    for path in BICEP_FILES:
        for name, module in parse(path.relative_to(INFRA).as_posix()).get("modules", {}).items():
            if module["type"] != "local":
                detail = module["detail"]
                assert detail["path"].startswith("avm/res/"), f"{path.name}: {name} is not an AVM module"
                assert re.fullmatch(r"\d+\.\d+\.\d+", detail["tag"]), f"{path.name}: {name} is not pinned"


def test_main_parameters_cover_the_required_parameters() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = parse("main.bicep")["parameters"]
    assert set(parameters) <= set(declared)
    required = {name for name, parameter in declared.items() if not has_default(parameter)}
    assert required <= set(parameters)
    secure = {name for name, parameter in declared.items() if is_secure(parameter)}
    assert not secure & set(parameters), "secrets must not be fed from the azd environment file"


# Hosting


def test_main_is_deployed_at_subscription_scope_into_a_tagged_resource_group() -> None:
    tree = parse("main.bicep")
    assert tree["globals"]["scope"]["value"] == "subscription"
    assert only(resources_of_type(tree, "Microsoft.Resources/resourceGroups"))


def test_the_plan_is_flex_consumption() -> None:
    plan = parse("main.bicep")["modules"]["appServicePlan"]
    assert plan["detail"]["path"] == "avm/res/web/serverfarm"
    params = body(plan)["params"]
    assert params["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert params["reserved"] is True


def test_the_scale_out_limit_is_a_described_parameter_passed_to_the_app() -> None:
    # maximumInstanceCount caps a burst's cost and Partner Center's parallel calls.
    parameter = parse("main.bicep")["parameters"]["maximumInstanceCount"]
    decorators = {decorator["type"]: decorator["argument"] for decorator in parameter["decorators"]}
    assert "description" in decorators and "Partner Center" in decorators["description"]
    assert (decorators["min_value"], decorators["max_value"]) == (1, 1000)
    assert module_params("main.bicep", "api")["maximumInstanceCount"] == "maximumInstanceCount"
    scale = function_app()["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    default = parameter["default"]
    assert parse("app/api.bicep")["parameters"]["maximumInstanceCount"]["default"] == default
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["maximumInstanceCount"]["value"] == f"${{MAXIMUM_INSTANCE_COUNT={default}}}"


def test_python_is_3_11_everywhere() -> None:
    assert main_variable("pythonVersion") == "3.11"
    assert module_params("main.bicep", "api")["pythonVersion"] == "pythonVersion"
    assert parse("app/api.bicep")["parameters"]["pythonVersion"]["default"] == "3.11"
    runtime = function_app()["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "pythonVersion"}


def test_the_function_app_uses_only_its_user_assigned_identity() -> None:
    app = function_app()
    assert app["kind"] == "functionapp,linux"
    assert app["identity"]["type"] == "UserAssigned"
    # pycep keeps the quotes of a quoted object key.
    assert list(app["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    deployment = app["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    identity = parse("main.bicep")["modules"]["apiUserAssignedIdentity"]
    assert identity["detail"]["path"] == "avm/res/managed-identity/user-assigned-identity"
    api = module_params("main.bicep", "api")
    assert "apiUserAssignedIdentity" in json.dumps(api["identityId"])
    assert "clientId" in json.dumps(api["identityClientId"])


def test_the_function_app_is_https_only_with_modern_tls_and_no_basic_auth_publishing() -> None:
    app = function_app()
    assert app["properties"]["httpsOnly"] is True
    site_config = app["properties"]["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2"
    assert site_config["ftpsState"] == "Disabled"
    assert site_config["remoteDebuggingEnabled"] is False
    policies = resources_of_type(parse("app/api.bicep"), "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(policy)["name"]: body(policy)["properties"]["allow"] for policy in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_azd_finds_the_function_app_by_its_service_tag() -> None:
    tags = function_app()["tags"]["function"]
    assert tags["type"] == "union"
    assert {"'azd-service-name'": "serviceName"} in tags["parameters"].values()
    assert parse("app/api.bicep")["parameters"]["serviceName"]["default"] == "api"


# App settings


def test_every_setting_the_code_reads_is_set_on_the_function_app() -> None:
    settings = app_settings()
    expected = set(ALL_SETTINGS) - SECRET_SETTINGS - {STORAGE_SETTING}
    assert expected <= set(settings), f"missing: {sorted(expected - set(settings))}"


def test_the_env_fallback_secrets_are_not_app_settings() -> None:
    assert SECRET_SETTINGS  # the three PARTNER_CENTER_* values
    assert not SECRET_SETTINGS & set(app_settings())


def test_host_storage_is_identity_based() -> None:
    settings = app_settings()
    assert STORAGE_SETTING not in settings, "no connection string: the identity-based form replaces it"
    assert "storageAccount" in json.dumps(settings[STORAGE_ACCOUNT_NAME_SETTING])
    assert settings[STORAGE_CREDENTIAL_SETTING] == "managedidentity"
    assert settings[STORAGE_CLIENT_ID_SETTING] == "identityClientId"
    for service in ("blob", "queue", "table"):
        assert service in json.dumps(settings[f"{STORAGE_SETTING}__{service}ServiceUri"])


def test_default_azure_credential_picks_the_user_assigned_identity() -> None:
    assert app_settings()["AZURE_CLIENT_ID"] == "identityClientId"


def test_application_insights_is_reached_with_the_identity() -> None:
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD;ClientId=${identityClientId}"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings
    monitoring = parse("main.bicep")["modules"]["monitoring"]
    assert monitoring["detail"]["path"] == "avm/res/insights/component"
    params = body(monitoring)["params"]
    assert params["disableLocalAuth"] is True
    assert "logAnalytics" in json.dumps(params["workspaceResourceId"])


def test_setting_values_come_from_the_contract_names_in_main() -> None:
    # api.bicep sets each contract setting from its own parameter; main.bicep passes its variables, whose
    # values are shared.settings.DEFAULTS.
    settings = app_settings()
    api = module_params("main.bicep", "api")
    wired = {
        REQUESTS_QUEUE_SETTING: "requestsQueueName",
        RESULTS_QUEUE_SETTING: "resultsQueueName",
        TABLE_SETTING: "upgradesTableName",
        MAX_ATTEMPTS_SETTING: "maxAttempts",
    }
    for setting, variable in wired.items():
        assert settings[setting] == variable
        assert api[variable] == variable
        assert main_variable(variable) == DEFAULTS[setting]
    secret_names = {
        APP_ID_SECRET_NAME_SETTING: "appIdSecretName",
        APP_SECRET_SECRET_NAME_SETTING: "appSecretSecretName",
        REFRESH_TOKEN_SECRET_NAME_SETTING: "refreshTokenSecretName",
    }
    keyvault = module_params("main.bicep", "keyVault")
    for setting, variable in secret_names.items():
        assert settings[setting] == variable
        assert main_variable(variable) == DEFAULTS[setting]
        assert keyvault[variable] == variable
        assert "keyVault" in json.dumps(api[variable])
    assert settings["KEY_VAULT_URL"] == "keyVaultUri"
    assert "vaultUri" in json.dumps(api["keyVaultUri"])
    assert settings["PARTNER_CENTER_TENANT_ID"] == "partnerCenterTenantId"
    assert api["partnerCenterTenantId"] == "partnerCenterTenantId"
    parameters = parse("main.bicep")["parameters"]
    assert not has_default(parameters["partnerCenterTenantId"]), "the partner tenant has no sensible default"
    assert parameters["partnerCenterAuthorityHost"]["default"] == DEFAULTS["PARTNER_CENTER_AUTHORITY_HOST"]
    assert parameters["partnerCenterBaseUrl"]["default"] == DEFAULTS["PARTNER_CENTER_BASE_URL"]


def test_every_value_in_api_bicep_is_a_parameter_passed_by_main() -> None:
    api_parameters = parse("app/api.bicep")["parameters"]
    passed = module_params("main.bicep", "api")
    for name, parameter in api_parameters.items():
        assert name in passed or has_default(parameter), f"main.bicep does not pass {name} to app/api.bicep"
    assert set(passed) <= set(api_parameters)


# Storage


def storage_account() -> dict[str, Any]:
    return body(only(resources_of_type(parse("app/storage.bicep"), "Microsoft.Storage/storageAccounts")))


def test_storage_allows_identity_based_access_only() -> None:
    properties = storage_account()["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["defaultToOAuthAuthentication"] is True
    assert properties["allowBlobPublicAccess"] is False
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["minimumTlsVersion"] == "TLS1_2"


def test_storage_has_the_deployment_container_queues_and_table() -> None:
    tree = parse("app/storage.bicep")
    container = only(resources_of_type(tree, "Microsoft.Storage/storageAccounts/blobServices/containers"))
    assert body(container) == {
        "parent": "blobService",
        "name": "deploymentContainerName",
        "properties": {"publicAccess": "None"},
    }
    queues = only(resources_of_type(tree, "Microsoft.Storage/storageAccounts/queueServices/queues"))
    assert queues["config"]["loop_type"]["detail"] == {"item_name": "queueName", "array_name": "queueNames"}
    assert body(queues)["name"] == "queueName"
    table = only(resources_of_type(tree, "Microsoft.Storage/storageAccounts/tableServices/tables"))
    assert body(table)["name"] == "tableName"

    storage = module_params("main.bicep", "storage")
    assert storage["queueNames"] == [
        "requestsQueueName",
        "resultsQueueName",
        "poisonQueueName",
        "trackingQueueName",
        "outcomesQueueName",
        "trackingPoisonQueueName",
    ]
    assert storage["tableName"] == "upgradesTableName"
    assert storage["deploymentContainerName"] == "deploymentStorageContainerName"
    assert module_params("main.bicep", "api")["deploymentStorageContainerName"] == "deploymentStorageContainerName"


def test_queue_and_table_names_match_the_settings_defaults() -> None:
    assert main_variable("requestsQueueName") == DEFAULTS[REQUESTS_QUEUE_SETTING]
    assert main_variable("resultsQueueName") == DEFAULTS[RESULTS_QUEUE_SETTING]
    assert main_variable("poisonQueueName") == "${requestsQueueName}-poison"
    assert main_variable("trackingPoisonQueueName") == "${trackingQueueName}-poison"
    assert main_variable("upgradesTableName") == DEFAULTS[TABLE_SETTING]


def test_max_attempts_equals_host_json_max_dequeue_count() -> None:
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    assert main_variable("maxAttempts") == DEFAULTS[MAX_ATTEMPTS_SETTING]
    assert int(main_variable("maxAttempts")) == host["extensions"]["queues"]["maxDequeueCount"]


# Key Vault


def vault() -> dict[str, Any]:
    return body(only(resources_of_type(parse("app/keyvault.bicep"), "Microsoft.KeyVault/vaults")))


def test_key_vault_uses_rbac_and_is_recoverable() -> None:
    properties = vault()["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert "accessPolicies" not in properties
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True


def test_secrets_are_written_only_from_secure_parameters_when_given() -> None:
    tree = parse("app/keyvault.bicep")
    parameters = tree["parameters"]
    assert not resources_of_type(tree, "Microsoft.KeyVault/vaults/secrets"), "secrets go through keyvault-secret.bicep"
    secret_modules = {
        name: module for name, module in tree["modules"].items() if module["detail"]["path"] == "keyvault-secret.bicep"
    }
    written = {}
    for name, module in secret_modules.items():
        value = body(module)["params"]["value"]
        assert is_secure(parameters[value]), f"{name} is written from {value}, which is not @secure()"
        assert parameters[value]["default"] == ""
        assert condition(module) == not_empty(value), f"{name} must be written only when {value} is given"
        written[body(module)["params"]["name"]] = value
    assert set(written) == {"appIdSecretName", "appSecretSecretName", "refreshTokenSecretName"}

    secret = parse("app/keyvault-secret.bicep")
    assert is_secure(secret["parameters"]["value"])
    properties = body(only(resources_of_type(secret, "Microsoft.KeyVault/vaults/secrets")))["properties"]
    assert properties["value"] == "value"
    assert properties["contentType"] == "contentType"
    assert "date_time_to_epoch" in json.dumps(properties["attributes"]["exp"])

    main = parse("main.bicep")
    keyvault = module_params("main.bicep", "keyVault")
    for module_param, main_param in {
        "appId": "partnerCenterAppId",
        "appSecret": "partnerCenterAppSecret",
        "refreshToken": "partnerCenterRefreshToken",
    }.items():
        assert is_secure(main["parameters"][main_param])
        assert main["parameters"][main_param]["default"] == ""
        assert keyvault[module_param] == main_param


def test_no_output_carries_a_secret() -> None:
    for path in BICEP_FILES:
        tree = parse(path.relative_to(INFRA).as_posix())
        secure = {name for name, parameter in tree.get("parameters", {}).items() if is_secure(parameter)}
        for name, output in tree.get("outputs", {}).items():
            text = json.dumps(output["value"])
            identifiers = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            assert not secure & identifiers, f"{path.name}: output {name} uses a @secure() parameter"
            assert not re.search(r"(?i)list_?keys|list_?secrets|connection_?string|primary_?key|sas", text), (
                f"{path.name}: output {name} looks like a secret: {text}"
            )
            assert '"operand_2": "value"' not in text, f"{path.name}: output {name} reads a secret's value"
            assert not any(decorator["type"] == "secure" for decorator in output["decorators"])


def test_main_outputs_feed_azd() -> None:
    outputs = parse("main.bicep")["outputs"]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs), "azd reads UPPER_SNAKE outputs"
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "AZURE_KEY_VAULT_URL", "SERVICE_API_NAME"} <= set(
        outputs
    )
    assert "vaultUri" in json.dumps(outputs["AZURE_KEY_VAULT_URL"]["value"])


# Role assignments


def role_assignments() -> dict[str, dict[str, Any]]:
    return resources_of_type(parse("app/rbac.bicep"), "Microsoft.Authorization/roleAssignments")


def test_role_ids_are_named_variables_of_built_in_roles() -> None:
    variables = parse("app/rbac.bicep")["variables"]
    role_variables = {name: variables[name]["value"] for name in variables if name.endswith("RoleId")}
    assert sorted(role_variables.values()) == sorted(ROLE_IDS.values())
    text = (INFRA / "app" / "rbac.bicep").read_text(encoding="utf-8")
    for role, role_id in ROLE_IDS.items():
        assert re.search(rf"// {re.escape(role)}\b.*\n(?://.*\n)*var \w+RoleId = '{role_id}'", text), (
            f"{role} ({role_id}) needs a named variable with a comment naming the role"
        )


def role_name(role_id: str) -> str:
    return {value: name for name, value in ROLE_IDS.items()}[role_id]


def main_queue_variable(rbac_param: str) -> str:
    """The main.bicep variable passed to rbac.bicep's parameter of that name."""
    return module_params("main.bicep", "rbac")[rbac_param]


def app_identity_grants() -> set[tuple[str, str]]:
    """(role name, scope) of every assignment to the app's identity. A queue scope is ``queue:<main variable>``."""
    tree = parse("app/rbac.bicep")
    variables = tree["variables"]
    granted = set()
    for name, assignment in role_assignments().items():
        config = body(assignment)
        role_definition = config["properties"]["roleDefinitionId"]["function"]
        assert role_definition["type"] == "subscription_resource_id"
        assert role_definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        assert config["name"]["function"]["type"] == "guid", f"{name}: role assignment names are guid()s"
        if config["properties"]["principalId"] != "managedIdentityPrincipalId":
            continue
        assert config["properties"]["principalType"] == "ServicePrincipal"
        loop = assignment["config"].get("loop_type")
        if loop is None:
            granted.add(
                (role_name(variables[role_definition["parameters"]["resource_name_1"]]["value"]), config["scope"])
            )
            continue
        # The queue grants: one assignment per entry of a list, scoped to that entry's queue.
        assert name == "queueRoles" and loop["detail"]["array_name"] == "queueGrants"
        assert config["scope"] == {
            "operator": {"type": "index_accessor", "operands": {"operand_1": "grantedQueues", "operand_2": "i"}}
        }
        queues = tree["resources"]["grantedQueues"]
        assert queues["existing"] and queues["config"]["loop_type"]["detail"]["array_name"] == "queueGrants"
        assert body(queues)["parent"] == "queueService"
        for grant in variables["queueGrants"]["value"]:
            granted.add(
                (role_name(variables[grant["roleId"]]["value"]), f"queue:{main_queue_variable(grant['queue'])}")
            )
    return granted


def test_the_identity_has_each_role_on_the_narrowest_scope() -> None:
    queue = {
        "Storage Queue Data Reader": "reader",
        "Storage Queue Data Message Processor": "processor",
        "Storage Queue Data Message Sender": "sender",
    }
    expected_queue_roles = {
        # Trigger queues that the app also writes to: deferral re-sends requests, the scheduler sends checks.
        "requestsQueueName": {"reader", "processor", "sender"},
        "trackingQueueName": {"reader", "processor", "sender"},
        "resultsQueueName": {"sender"},
        "outcomesQueueName": {"sender"},
        # The host moves a message to its trigger queue's poison queue after maxDequeueCount attempts.
        "poisonQueueName": {"sender"},
        "trackingPoisonQueueName": {"sender"},
    }
    granted = app_identity_grants()
    queue_roles: dict[str, set[str]] = {}
    for role, scope in granted:
        if scope.startswith("queue:"):
            queue_roles.setdefault(scope.removeprefix("queue:"), set()).add(queue[role])
    assert queue_roles == expected_queue_roles
    assert {grant for grant in granted if not grant[1].startswith("queue:")} == {
        # The host creates its own containers in AzureWebJobsStorage: blob access needs the account scope.
        ("Storage Blob Data Owner", "storageAccount"),
        ("Storage Table Data Contributor", "upgradesTable"),
        ("Monitoring Metrics Publisher", "applicationInsights"),
        ("Key Vault Secrets User", "keyVault"),
        ("Key Vault Secrets Officer", "refreshTokenSecret"),
    }
    assert not any(role == "Storage Queue Data Contributor" for role, _ in granted), "no account-wide queue role"

    tree = parse("app/rbac.bicep")
    secret = tree["resources"]["refreshTokenSecret"]
    assert secret["existing"] and secret["config"] == {"parent": "keyVault", "name": "refreshTokenSecretName"}
    table = tree["resources"]["upgradesTable"]
    assert table["existing"] and table["config"] == {"parent": "tableService", "name": "tableName"}
    rbac = module_params("main.bicep", "rbac")
    assert rbac["tableName"] == "upgradesTableName"
    assert "apiUserAssignedIdentity" in json.dumps(rbac["managedIdentityPrincipalId"])
    assert "refreshTokenSecretName" in json.dumps(rbac["refreshTokenSecretName"])


def test_every_queue_binding_of_the_app_has_its_roles_and_an_existing_poison_queue() -> None:
    # Cross-check against the functions themselves: a queue trigger needs Reader + Message Processor on its
    # queue and Sender on its poison queue (which must exist: the identity cannot create queues); a queue output
    # binding needs Sender.
    # Indexed once per process by the harness: get_functions() refuses to index twice.
    from tests.harness import indexed_functions

    settings = app_settings()
    api = module_params("main.bicep", "api")
    created = module_params("main.bicep", "storage")["queueNames"]
    granted = app_identity_grants()
    bindings = [binding for function in indexed_functions().values() for binding in function.get_bindings()]
    queue_bindings = [binding for binding in bindings if binding.type in ("queueTrigger", "queue")]
    assert any(binding.type == "queueTrigger" for binding in queue_bindings)
    for binding in queue_bindings:
        setting = re.fullmatch(r"%(\w+)%", binding.queue_name)
        assert setting, f"{binding.queue_name}: queue names come from app settings"
        variable = api[settings[setting[1]]]
        assert variable in created
        if binding.type == "queueTrigger":
            assert ("Storage Queue Data Reader", f"queue:{variable}") in granted
            assert ("Storage Queue Data Message Processor", f"queue:{variable}") in granted
            poison = next(name for name in created if main_variable(name) == f"${{{variable}}}-poison")
            assert ("Storage Queue Data Message Sender", f"queue:{poison}") in granted
        else:
            assert ("Storage Queue Data Message Sender", f"queue:{variable}") in granted


def test_the_deploying_user_is_secrets_officer_only_when_asked() -> None:
    main = parse("main.bicep")
    assert main["parameters"]["grantUserSecretsOfficer"]["default"] is False
    assert module_params("main.bicep", "rbac")["grantUserSecretsOfficer"] == "grantUserSecretsOfficer"
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["grantUserSecretsOfficer"]["value"] == "${KEY_VAULT_SECRETS_OFFICER=false}"
    officers = {
        name: assignment
        for name, assignment in role_assignments().items()
        if body(assignment)["properties"]["principalId"] == "userPrincipalId"
        and "keyVaultSecretsOfficerRoleId" in json.dumps(body(assignment)["properties"]["roleDefinitionId"])
    }
    assert condition(only(officers)) == {
        "operator": {"type": "and", "operands": {"operand_1": "hasUser", "operand_2": "grantUserSecretsOfficer"}}
    }
    assert parse("app/rbac.bicep")["parameters"]["grantUserSecretsOfficer"]["default"] is False


# Diagnostics


def diagnostic_settings(relative: str) -> dict[str, dict[str, Any]]:
    return {
        body(setting)["scope"]: body(setting)
        for setting in resources_of_type(parse(relative), "Microsoft.Insights/diagnosticSettings").values()
    }


def test_function_app_and_blob_service_send_their_logs_to_log_analytics() -> None:
    app = diagnostic_settings("app/api.bicep")["functionApp"]["properties"]
    assert app["workspaceId"] == "logAnalyticsWorkspaceId"
    assert {"category": "FunctionAppLogs", "enabled": True} in app["logs"]
    assert (
        module_params("main.bicep", "api")["logAnalyticsWorkspaceId"]
        == module_params("main.bicep", "storage")["logAnalyticsWorkspaceId"]
    )
    assert "logAnalytics" in json.dumps(module_params("main.bicep", "api")["logAnalyticsWorkspaceId"])

    storage = diagnostic_settings("app/storage.bicep")
    assert set(storage) == {"blobService", "queueService", "tableService"}
    for settings in storage.values():
        assert settings["properties"]["workspaceId"] == "logAnalyticsWorkspaceId"
        assert settings["properties"]["logs"] == [{"categoryGroup": "allLogs", "enabled": True}]
    assert "vault" in diagnostic_settings("app/keyvault.bicep")


# Network isolation


def test_network_isolation_is_optional_and_off_by_default() -> None:
    main = parse("main.bicep")
    assert main["parameters"]["enableNetworkIsolation"]["default"] is False
    assert condition(main["modules"]["network"]) == "enableNetworkIsolation"
    assert "network" in json.dumps(module_params("main.bicep", "api")["virtualNetworkSubnetId"])

    network = parse("app/network.bicep")
    targets = {link["groupId"] for link in network["variables"]["privateLinks"]["value"]}
    assert targets == {"blob", "queue", "table", "vault"}
    endpoints = network["modules"]["privateEndpoints"]
    assert endpoints["detail"]["path"] == "avm/res/network/private-endpoint"
    assert endpoints["config"]["loop_type"]["detail"]["array_name"] == "privateLinks"
    subnets = body(network["modules"]["virtualNetwork"])["params"]["subnets"]
    assert {"Microsoft.App/environments"} == {subnet["delegation"] for subnet in subnets if "delegation" in subnet}


def test_checkov_suppressions_carry_a_reason() -> None:
    for path in BICEP_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "checkov:skip" in line:
                assert re.search(r"checkov:skip=CKV_\w+: \S.{20,}", line), f"{path.name}: {line.strip()}"


# Types: every resource as Azure publishes it

BICEP_TYPES = REPO.parent / "shared" / "tools" / "bicep-types" / "check.py"


def test_every_resource_matches_azures_published_types() -> None:
    if not BICEP_TYPES.is_file():
        pytest.skip(f"{BICEP_TYPES} not found: ../shared is not beside this repository")
    run = subprocess.run([sys.executable, str(BICEP_TYPES), "infra"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^0 finding\(s\)", run.stdout, re.MULTILINE), run.stdout
    # Every registry module is named as unchecked: infra/README.md says which ones and why.
    unchecked = set(re.findall(r"\(br/public:(avm/[\w/-]+:\d+\.\d+\.\d+)\): from a registry", run.stdout))
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert unchecked and all(f"`{module}`" in readme for module in unchecked), sorted(unchecked)


def test_ci_runs_the_type_check_and_skips_it_only_without_shared() -> None:
    script = (REPO / ".ci" / "infra-check").read_text(encoding="utf-8")
    assert "tools/bicep-types/check.py" in script
    assert '"$python" "$bicep_types" infra' in script
    assert "SKIP bicep-types" in script


# infra/README.md: what is public, network isolation, cost, app registration, clean up

INFRA_README = INFRA / "README.md"


def readme_section(title: str) -> str:
    text = INFRA_README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"infra/README.md has no section '## {title}'"
    return match[1]


def test_the_readme_says_what_is_public_and_how_network_isolation_closes_it() -> None:
    section = readme_section("What is public by default, and how network isolation closes it")
    for resource in ("Function App", "Storage account", "Key Vault", "Application Insights"):
        assert f"| {resource}" in section, resource
    # The switches it names are the ones azd feeds to main.bicep.
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for parameter in ("enableNetworkIsolation", "keyVaultAllowedIpRange"):
        variable = re.fullmatch(r"\$\{(\w+)=.*\}", parameters[parameter]["value"])
        assert variable and variable[1] in section, parameter
    # What it says isolation closes is what the Bicep closes: public access off on storage and the vault.
    assert "enableNetworkIsolation ? 'Disabled' : 'Enabled'" in (INFRA / "app" / "storage.bicep").read_text()
    assert (
        "enableNetworkIsolation && empty(allowedIpRange) ? 'Disabled'" in (INFRA / "app" / "keyvault.bicep").read_text()
    )


def test_the_readme_has_cost_app_registration_and_clean_up() -> None:
    cost = readme_section("Cost")
    for item in (
        "maximumInstanceCount",
        "MAXIMUM_INSTANCE_COUNT",
        "Storage",
        "Log Analytics",
        "Key Vault",
        "private endpoints",
    ):
        assert item in cost, item
    registration = readme_section("Register the Entra app (secure application model)")
    assert "user_impersonation" in registration
    assert "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd" in registration  # Microsoft Partner Center API
    assert "1cebfa2a-fb4d-419e-b5f9-839b4383e05a=Scope" in registration  # its delegated user_impersonation
    clean_up = readme_section("Clean up")
    for step in ("azd down", "az ad app delete", "revokeSignInSessions", "credential delete"):
        assert step in clean_up, step


# GNU-only forms that fail on macOS's BSD tools or its bash 3.2.
GNU_ONLY = {
    r"\bdate\b[^\n|;]*\s-d\b": "date -d",
    r"\bshred\b": "shred",
    r"\bsed -i(?! ?'')(?! ?\"\")\s": "sed -i without a suffix",
    r"\bsource <\(": "source <(...)",
    r"\breadlink -f\b": "readlink -f",
    r"\bgrep -P\b": "grep -P",
    r"\bbase64 -w\b": "base64 -w",
    r"\bstat -c\b": "stat -c",
}


SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.DOTALL)
#: Every Markdown page of the repository with a shell block: the front page, infra/, docs/.
SHELL_DOCS = sorted(
    path.relative_to(REPO).as_posix()
    for pattern in ("*.md", "infra/*.md", "docs/*.md")
    for path in REPO.glob(pattern)
    if SHELL_BLOCK.search(path.read_text(encoding="utf-8"))
)


def test_the_docs_with_shell_commands_are_found() -> None:
    # The guard of the test below: the pages that hold the commands people copy are among those checked.
    assert {"README.md", "infra/README.md", "docs/development.md", "docs/sandbox.md", "docs/campaigns.md"} <= set(
        SHELL_DOCS
    )


@pytest.mark.parametrize("doc", SHELL_DOCS)
def test_shell_commands_in_the_docs_also_work_on_macos(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    blocks = SHELL_BLOCK.findall(text)
    assert blocks
    found = [
        f"{name}: {match.group(0)!r}"
        for block in blocks
        for pattern, name in GNU_ONLY.items()
        for match in re.finditer(pattern, block)
    ]
    assert found == []
    assert GNU_ONLY and re.search(next(iter(GNU_ONLY)), "date -u -d '+90 days'"), "the guard itself must match"
