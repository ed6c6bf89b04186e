"""The project's configuration files against their published JSON Schemas, offline.

The schemas are byte-for-byte upstream copies in ``../shared/schemas`` (see its SOURCES.md), each registered
under the URI its ``$ref``s use; the JSON Schema metaschemas come from ``jsonschema-specifications``.
Nothing is fetched: a ``$ref`` outside the registry fails the test.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from shared.settings import ALL_SETTINGS, DEFAULTS, MAX_ATTEMPTS_SETTING

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"

HOST_JSON_URI = "https://json.schemastore.org/host.json"
LOCAL_SETTINGS_URI = "https://json.schemastore.org/local.settings.json"
AZURE_DEV_BASE = "https://raw.githubusercontent.com/Azure/azure-dev/main/"
AZURE_YAML_URI = AZURE_DEV_BASE + "schemas/v1.0/azure.yaml.json"

pytestmark = pytest.mark.skipif(not SCHEMAS.is_dir(), reason=f"stored schemas not found at {SCHEMAS}")


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=uri)  # never fetch: every schema must be stored and registered


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _stored() -> dict[str, Any]:
    """Every stored schema by the URI it is registered under."""
    schemas = {
        HOST_JSON_URI: _load(SCHEMAS / "schemastore" / "host.json"),
        LOCAL_SETTINGS_URI: _load(SCHEMAS / "schemastore" / "local.settings.json"),
    }
    azure_dev = SCHEMAS / "azure-dev"
    for path in sorted(azure_dev.rglob("*.json")):
        schemas[AZURE_DEV_BASE + path.relative_to(azure_dev).as_posix()] = _load(path)
    return schemas


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    return _stored()


@pytest.fixture(scope="module")
def registry(stored: dict[str, Any]) -> Registry[Any]:
    resources = [(uri, Resource.from_contents(schema)) for uri, schema in stored.items()]
    return Registry(retrieve=_offline).with_resources(resources).combine(METASCHEMAS)


def _validator(registry: Registry[Any], uri: str, pointer: str = "") -> jsonschema.protocols.Validator:
    schema = registry.contents(uri)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls({"$ref": uri + pointer} if pointer else schema, registry=registry)


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_ref_of_the_stored_schemas_resolves_offline(stored: dict[str, Any], registry: Registry[Any]) -> None:
    for uri, schema in stored.items():
        resolver = registry.resolver(base_uri=uri)
        for ref in _refs(schema):
            resolver.lookup(ref)  # raises Unresolvable when a file is missing


# host.json


@pytest.fixture(scope="module")
def host_json() -> Any:
    return _load(REPO / "host.json")


def test_host_json_is_a_version_2_host_file(host_json: Any, registry: Registry[Any]) -> None:
    assert _errors(_validator(registry, HOST_JSON_URI, "#/definitions/version-2"), host_json) == []
    assert _errors(_validator(registry, HOST_JSON_URI), host_json) == []


def test_host_json_schema_rejects_a_wrong_type(host_json: Any, registry: Registry[Any]) -> None:
    broken = copy.deepcopy(host_json)
    broken["extensions"]["queues"]["maxDequeueCount"] = "five"
    assert _errors(_validator(registry, HOST_JSON_URI, "#/definitions/version-2"), broken)


def test_host_json_keeps_the_contract(host_json: Any) -> None:
    assert host_json["version"] == "2.0"
    assert host_json["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    assert host_json["extensions"]["http"]["routePrefix"] == "api"
    queues = host_json["extensions"]["queues"]
    assert queues["maxDequeueCount"] == 5 == int(DEFAULTS[MAX_ATTEMPTS_SETTING])
    assert queues["messageEncoding"] == "none"


# local.settings.sample.json


@pytest.fixture(scope="module")
def local_settings() -> Any:
    return _load(REPO / "local.settings.sample.json")


def test_local_settings_sample_matches_the_schema(local_settings: Any, registry: Registry[Any]) -> None:
    assert _errors(_validator(registry, LOCAL_SETTINGS_URI), local_settings) == []
    assert local_settings["IsEncrypted"] is False
    assert local_settings["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_local_settings_sample_lists_every_setting(local_settings: Any) -> None:
    values = local_settings["Values"]
    missing = [name for name in ALL_SETTINGS if name not in values]
    assert missing == []
    assert all(isinstance(value, str) for value in values.values())


# azure.yaml


@pytest.fixture(scope="module")
def azure_yaml() -> Any:
    return yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))


def test_azure_yaml_matches_the_azd_schema(azure_yaml: Any, registry: Registry[Any]) -> None:
    validator = _validator(registry, AZURE_YAML_URI)
    assert isinstance(validator, jsonschema.Draft201909Validator)
    assert _errors(validator, azure_yaml) == []


def test_azure_yaml_schema_rejects_a_wrong_type(azure_yaml: Any, registry: Registry[Any]) -> None:
    broken = copy.deepcopy(azure_yaml)
    broken["services"]["api"]["project"] = ["."]
    assert _errors(_validator(registry, AZURE_YAML_URI), broken)


def test_azure_yaml_deploys_this_function_app(azure_yaml: Any) -> None:
    # azd's schema no longer enumerates host or language; check them here.
    api = azure_yaml["services"]["api"]
    assert api["host"] == "function"
    assert api["language"] == "python"
    assert api["project"] == "."
    assert azure_yaml.get("infra", {}).get("path", "infra") == "infra"
