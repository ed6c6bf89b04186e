"""The repository's GitHub workflows and dev container: valid, minimal in what they may do, in step with the code.

Workflows are validated with check-jsonschema against SchemaStore's GitHub workflow schema (bundled in
check-jsonschema, so offline).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.repository import tracked_files

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SHA_PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
#: Actions pinned by tag, with the reason written in the workflow (none: every action is pinned by commit).
TAG_PINNED: set[str] = set()


def check_workflows(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def load(name: str) -> dict[Any, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def on(workflow: dict[Any, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_workflows_match_the_github_workflow_schema() -> None:
    paths = sorted(WORKFLOWS.glob("*.yml"))
    assert {p.name for p in paths} >= {"ci.yml", "azure-dev.yml"}
    result = check_workflows(*paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = load("ci.yml")
    del broken["jobs"]["check"]["runs-on"]
    broken["jobs"]["check"]["timeout-minutes"] = "half an hour"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    result = check_workflows(path)
    assert result.returncode == 1, result.stdout
    assert "runs-on" in result.stdout


@pytest.mark.parametrize("name", ["ci.yml", "azure-dev.yml"])
def test_actions_are_pinned_by_commit(name: str) -> None:
    uses = [step["uses"] for step in steps(load(name)) if "uses" in step]
    assert uses
    for action in uses:
        assert SHA_PINNED.match(action) or action in TAG_PINNED, action
    if set(uses) & TAG_PINNED:
        assert "pinned by its major tag" in (WORKFLOWS / name).read_text()  # the reason is written down


def test_ci_runs_scripts_check_with_read_only_permissions() -> None:
    ci = load("ci.yml")
    assert ci["permissions"] == {"contents": "read"}
    assert {"push", "pull_request"} <= set(on(ci))
    runs = [step.get("run", "") for step in steps(ci)]
    assert "bash scripts/check" in runs
    assert "bash .ci/infra-check" in runs
    python = [step["with"]["python-version"] for step in steps(ci) if "setup-python" in step.get("uses", "")]
    assert set(python) == {"3.11"}
    for job in ci["jobs"].values():
        assert job["timeout-minutes"] <= 30


def test_azure_dev_is_what_azd_pipeline_config_expects() -> None:
    workflow = load("azure-dev.yml")
    assert {"workflow_dispatch", "push"} <= set(on(workflow))
    [job] = workflow["jobs"].values()
    env = job["env"]
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "AZURE_ENV_NAME", "AZURE_LOCATION"):
        assert env[name] == f"${{{{ vars.{name} }}}}"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert '--federated-credential-provider "github"' in runs
    assert "azd provision --no-prompt" in runs and "azd deploy --no-prompt" in runs
    assert "client-secret" not in runs


def test_azure_dev_passes_every_infra_parameter_azd_reads_from_the_environment() -> None:
    parameters = (ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Z0-9_]+)", parameters))
    [job] = load("azure-dev.yml")["jobs"].values()
    # azd sets AZURE_PRINCIPAL_ID itself, from the identity it logged in with.
    assert names - {"AZURE_PRINCIPAL_ID"} <= set(job["env"]), names - set(job["env"])
    assert job["env"]["AZURE_PRINCIPAL_TYPE"] == "ServicePrincipal"


def test_no_secret_lives_in_the_workflows() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        # Only azd's own environment configuration comes from a repository secret; nothing is written inline.
        assert set(re.findall(r"secrets\.(\w+)", text)) <= {"AZD_INITIAL_ENVIRONMENT_CONFIG"}, path.name
        assert not re.search(r"(?i)(client[_-]?secret|password|refresh[_-]?token)\s*:", text), path.name


def test_the_deployment_job_gets_its_token_only_in_the_protected_environment() -> None:
    workflow = load("azure-dev.yml")
    # The workflow grants nothing; the one job asks for the OIDC token, inside the environment Entra ID trusts.
    assert workflow["permissions"] == {}
    [job] = workflow["jobs"].values()
    assert job["environment"] == "production"
    assert job["permissions"] == {"id-token": "write", "contents": "read"}
    assert "pull_request" not in set(on(workflow)) and "pull_request_target" not in set(on(workflow))
    text = (WORKFLOWS / "azure-dev.yml").read_text(encoding="utf-8")
    assert "repo:OWNER/REPO:pull_request" in text and "environment:production" in text
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for said in (
        "repo:<owner>/<repo>:pull_request",
        "repo:<owner>/<repo>:environment:production",
        "federated-credential delete",
    ):
        assert said in page, said


def test_the_dev_container_pins_core_tools_to_one_release() -> None:
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text(encoding="utf-8"))
    [version] = re.findall(r"azure-functions-core-tools@(\S+)", config["postCreateCommand"])
    assert re.fullmatch(r"4\.\d+\.\d+", version), version


def test_devcontainer_has_python_311_node_core_tools_and_azurite() -> None:
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text(encoding="utf-8"))
    assert re.search(r"/python:\d+-3\.11-", config["image"])
    features = config["features"]
    assert features["ghcr.io/devcontainers/features/node:1"] == {"version": "20"}
    assert "ghcr.io/devcontainers/features/azure-cli:1" in features
    # Core Tools from npm; Azurite (package-lock.json) and .venv from scripts/check setup.
    assert "npm install -g azure-functions-core-tools@4." in config["postCreateCommand"]
    assert config["postCreateCommand"].endswith("bash scripts/check setup")
    assert {7071, 10000, 10001, 10002} <= set(config["forwardPorts"])


def test_pre_commit_runs_the_pinned_ruff_and_the_file_checks() -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    repos = {repo["repo"]: repo for repo in config["repos"]}
    ruff = repos["https://github.com/astral-sh/ruff-pre-commit"]
    # The hook's ruff is the one scripts/check runs: the version requirements-dev.txt pins.
    [pinned] = re.findall(r"^ruff==(\S+) ", (ROOT / "requirements-dev.txt").read_text(encoding="utf-8"), re.MULTILINE)
    assert ruff["rev"] == f"v{pinned}"
    assert [(hook["id"], hook.get("args", [])) for hook in ruff["hooks"]] == [
        ("ruff-check", ["--fix"]),
        ("ruff-format", []),
    ]
    hooks = {hook["id"] for hook in repos["https://github.com/pre-commit/pre-commit-hooks"]["hooks"]}
    assert hooks == {"check-yaml", "end-of-file-fixer", "trailing-whitespace"}


def test_pre_commit_checks_commit_subjects_at_the_commit_msg_stage(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert "commit-msg" in config["default_install_hook_types"]
    [local] = [repo for repo in config["repos"] if repo["repo"] == "local"]
    [hook] = local["hooks"]
    assert hook["stages"] == ["commit-msg"]
    assert hook["entry"] == "python scripts/commit_subject.py"

    def check(message: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "COMMIT_EDITMSG"
        path.write_text(message, encoding="utf-8")
        script = ROOT / "scripts" / "commit_subject.py"
        return subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=60)

    fine = "Pace Partner Center calls at a learned rate" + "x" * 29  # 72 characters
    comment = "# a comment git strips, however long it is, is not a subject"
    assert check(f"{fine}\n\nWhy it matters.\n{comment}\n").returncode == 0
    too_long = check(fine + "y\n")
    assert too_long.returncode == 1
    assert "73 characters, at most 72" in too_long.stderr
    assert "a blank line must follow" in check("Add a thing\nThe why, too close.\n").stderr
    assert "full stop" in check("Add a thing.\n").stderr
    assert "empty" in check("# only a comment\n\n").stderr


@pytest.mark.install
def test_setup_on_a_fresh_checkout_puts_the_console_script_in_its_venv(tmp_path: Path) -> None:
    # What a new operator does: a checkout with no .venv, `scripts/check setup`, `. .venv/bin/activate`, and
    # product-upgrades is on PATH, whatever Python comes first there otherwise. Needs the package index.
    checkout = tmp_path / "checkout"
    for name in tracked_files():
        if (ROOT / name).is_file():  # a file deleted in the working tree is not the checkout's either
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    (checkout / "node_modules").symlink_to(ROOT / "node_modules")  # Azurite is installed once, by npm ci
    assert not (checkout / ".venv").exists()
    setup = subprocess.run(
        ["bash", "scripts/check", "setup"], cwd=checkout, capture_output=True, text=True, timeout=900
    )
    assert setup.returncode == 0, setup.stderr[-2000:]
    script = checkout / ".venv" / "bin" / "product-upgrades"
    assert script.is_file()
    ran = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and ran.stdout.startswith("product-upgrades "), ran.stderr
