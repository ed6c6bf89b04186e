"""What Azure installs and what it is given: the hashed dependency locks and the deployment package.

``requirements.txt`` and ``requirements-dev.txt`` are full locks compiled by ``scripts/lock``
from the human lists ``requirements.in`` and ``requirements-dev.in``: every package pinned with ``==`` and its
sha256 hashes. ``.funcignore`` leaves everything that is not the app out of the deployment package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pathspec import GitIgnoreSpec

from tests.repository import tracked_files

REPO = Path(__file__).resolve().parents[1]

# Dependency locks

HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
# Azure Functions on Linux (Flex Consumption) runs Python 3.11 on x86_64: the lock must serve that.
AZURE = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.11",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str:
        [specifier] = self.requirement.specifier
        return specifier.version

    def applies(self, environment: dict[str, str]) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate(environment)


def lock_entries(text: str) -> list[str]:
    """The logical lines of a requirements file: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def lock_problems(text: str) -> tuple[dict[str, Pin], list[str]]:
    """The pins of a lock file, and everything that makes it less than a full hashed lock of plain pins."""
    pins: dict[str, Pin] = {}
    problems = []
    for entry in lock_entries(text):
        if entry.startswith("-"):
            # Options (-r, -e, --index-url ...) have no place in a lock Azure's remote build installs.
            problems.append(f"not a plain pin: {entry[:80]}")
            continue
        spec, *hashes = re.split(r"\s+(?=--hash=)", entry)
        requirement = Requirement(spec)
        pin = Pin(requirement, tuple(hashes))
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            problems.append(f"{requirement.name}: not pinned with ==: {spec}")
        if requirement.url:
            problems.append(f"{requirement.name}: a URL, not a pin from the index")
        if not hashes:
            problems.append(f"{requirement.name}: no --hash=sha256:")
        problems += [f"{requirement.name}: malformed hash {h[:40]}" for h in hashes if not HASH.fullmatch(h)]
        if pin.name in pins and pins[pin.name].applies(AZURE) and pin.applies(AZURE):
            problems.append(f"{requirement.name}: pinned twice")
        if pin.applies(AZURE) or pin.name not in pins:
            pins[pin.name] = pin
    return pins, problems


def human_list(path: Path) -> list[Requirement]:
    """The requirements an ``.in`` file names, following ``-r`` (``-c`` constrains and adds nothing)."""
    requirements = []
    for entry in lock_entries(path.read_text(encoding="utf-8")):
        if entry.startswith("-r "):
            requirements += human_list(path.parent / entry.removeprefix("-r ").strip())
        elif entry.startswith("-c "):
            assert (path.parent / entry.removeprefix("-c ").strip()).is_file(), entry
        else:
            assert not entry.startswith("-"), f"{path.name}: unexpected option {entry}"
            requirements.append(Requirement(entry))
    return requirements


def coverage_problems(human: list[Requirement], pins: dict[str, Pin]) -> list[str]:
    problems = []
    for requirement in human:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None or not pin.applies(AZURE):
            problems.append(f"{requirement.name} is not in the lock: run scripts/lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement.name}: locked {pin.version} is outside {requirement.specifier}")
    return problems


def read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("human", "lock"), [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")]
)
def test_every_name_of_the_human_list_is_pinned_with_hashes_in_its_lock(human: str, lock: str) -> None:
    pins, problems = lock_problems(read(lock))
    assert problems == []
    assert coverage_problems(human_list(REPO / human), pins) == []
    assert len(pins) > len(human_list(REPO / human)), "a full lock pins the transitive dependencies too"


def test_the_checks_fail_on_a_floating_unhashed_or_missing_package() -> None:
    # The guards of the test above, on doctored copies of the real lock.
    text = read("requirements.txt")
    unhashed = re.sub(r"(requests==[^\s\\]+)[^#]*?(?=\n\s*#)", r"\1", text, count=1)
    assert "requests: no --hash=sha256:" in lock_problems(unhashed)[1]
    floating = text.replace("requests==", "requests>=", 1)
    assert any("requests: not pinned with ==" in problem for problem in lock_problems(floating)[1])
    assert lock_problems(text + "--index-url https://example.invalid/simple\n")[1]
    pins, _ = lock_problems(text)
    del pins["msal"]
    assert coverage_problems(human_list(REPO / "requirements.in"), pins) == [
        "msal is not in the lock: run scripts/lock"
    ]
    pins, _ = lock_problems(text)
    assert coverage_problems([Requirement("requests>=99")], pins) == [
        f"requests: locked {pins['requests'].version} is outside >=99"
    ]


def test_the_dev_lock_holds_the_runtime_lock_at_the_same_versions() -> None:
    # requirements-dev.in says `-c requirements.txt`: the tests run what Azure installs.
    assert re.search(r"^-r requirements\.in$", read("requirements-dev.in"), re.MULTILINE)
    assert re.search(r"^-c requirements\.txt$", read("requirements-dev.in"), re.MULTILINE)
    runtime, _ = lock_problems(read("requirements.txt"))
    dev, _ = lock_problems(read("requirements-dev.txt"))
    assert {name: pin.version for name, pin in runtime.items()} == {
        name: dev[name].version for name in runtime if name in dev
    }
    assert set(runtime) <= set(dev)
    assert all(set(runtime[name].hashes) == set(dev[name].hashes) for name in runtime)


def test_the_runtime_lock_leaves_the_worker_to_the_functions_host() -> None:
    runtime, _ = lock_problems(read("requirements.txt"))
    assert "azure-functions-worker" not in runtime
    assert {"azure-functions", "azure-identity", "azure-keyvault-secrets", "requests", "msal"} <= set(runtime)


def test_the_locks_are_closed_under_dependencies_and_installed_as_locked() -> None:
    # What `pip install --require-hashes` enforces at install time, checked here on the installed metadata:
    # every dependency of a locked package (for this machine's markers, without extras) is locked too, and
    # this environment (scripts/check setup) holds exactly the locked versions.
    pins, _ = lock_problems(read("requirements-dev.txt"))
    here = default_environment()
    missing, drifted = [], []
    for name, pin in pins.items():
        if not pin.applies(here):
            continue
        installed = importlib.metadata.version(name)
        if installed != pin.version:
            drifted.append(f"{name}: installed {installed}, locked {pin.version}")
        for dependency in map(Requirement, importlib.metadata.requires(name) or []):
            if dependency.marker is not None and not dependency.marker.evaluate({**here, "extra": ""}):
                continue
            if canonicalize_name(dependency.name) not in pins:
                missing.append(f"{name} needs {dependency.name}")
    assert missing == []
    assert drifted == []


def load_lock_extras() -> Any:
    """scripts/lock_extras.py, the check scripts/lock runs: a script, not a package, so loaded from its path."""
    spec = importlib.util.spec_from_file_location("lock_extras", REPO / "scripts" / "lock_extras.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def install_report(lock: str) -> dict[str, object]:
    """pip's install report of the locked packages this machine installs, from the installed metadata."""
    pins, _ = lock_problems(read(lock))
    here = default_environment()
    return {
        "install": [
            {"metadata": {"name": name, "requires_dist": importlib.metadata.requires(name) or []}}
            for name, pin in pins.items()
            if pin.applies(here)
        ]
    }


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_every_extra_a_locked_package_requires_is_pinned_with_it(lock: str) -> None:
    # pytest-cov requires coverage[toml]: a lock pinning plain coverage installed with a current pip and failed
    # with the pip python3.11 -m venv ships, once coverage had a newer release than the lock's.
    lock_extras = load_lock_extras()
    pins = lock_extras.pinned_extras(read(lock))
    assert lock_extras.required_extras(install_report(lock), pins) == []
    if lock == "requirements-dev.txt":
        assert "toml" in pins["coverage"]


def test_the_extras_check_fails_on_a_lock_that_strips_an_extra() -> None:
    lock_extras = load_lock_extras()
    stripped = read("requirements-dev.txt").replace("coverage[toml]==", "coverage==")
    problems = lock_extras.required_extras(install_report("requirements-dev.txt"), lock_extras.pinned_extras(stripped))
    assert problems == ["pytest-cov requires coverage[toml]: the lock does not pin ['toml']"]


@pytest.mark.install
@pytest.mark.parametrize("pip", ["the venv's own pip", "the newest pip"])
@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_each_lock_installs_into_a_fresh_venv(lock: str, pip: str, tmp_path: Path) -> None:
    # What a new machine does (scripts/check setup, Azure's remote build): a fresh venv, whatever pip it has,
    # --require-hashes, whatever newer releases the index holds by now. Needs the package index.
    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = str(target / "bin" / "python")
    quiet = ["--quiet", "--disable-pip-version-check"]
    if pip == "the newest pip":
        subprocess.run([python, "-m", "pip", "install", *quiet, "--upgrade", "pip"], check=True)
    version = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    installed = subprocess.run(
        [python, "-m", "pip", "install", *quiet, "--require-hashes", "-r", str(REPO / lock)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, f"{version.stdout.strip()}: {installed.stderr[-2000:]}"
    frozen = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    versions = {canonicalize_name(item["name"]): item["version"] for item in json.loads(frozen.stdout)}
    pins, _ = lock_problems(read(lock))
    here = default_environment()
    assert {name: versions.get(name) for name, pin in pins.items() if pin.applies(here)} == {
        name: pin.version for name, pin in pins.items() if pin.applies(here)
    }


def test_one_documented_command_relocks_and_setup_installs_from_the_lock() -> None:
    lock = REPO / "scripts" / "lock"
    assert os.access(lock, os.X_OK)
    assert re.search(r'^UV_VERSION="\d+\.\d+\.\d+"$', lock.read_text(encoding="utf-8"), re.MULTILINE)
    assert "--generate-hashes" in lock.read_text(encoding="utf-8")
    assert "--no-strip-extras" in lock.read_text(encoding="utf-8")
    assert "scripts/lock_extras.py" in lock.read_text(encoding="utf-8")
    for lock_file in ("requirements.txt", "requirements-dev.txt"):
        assert read(lock_file).splitlines()[1].strip() == "#    scripts/lock", f"{lock_file} names its command"
    assert "--require-hashes -r requirements-dev.txt" in read("scripts/check")
    assert "scripts/lock" in read("docs/development.md")


# Deployment package

# The app: what the Functions host loads and what the remote build installs. Nothing else is deployed.
# The connector's definition too: GET /api/openapi.json serves it.
APP_FILES = {"function_app.py", "host.json", "requirements.txt", "connector/apiDefinition.swagger.json"}
APP_PACKAGE = "shared/"

# Files a developer's or CI's working tree holds besides the tracked ones; none of them may be deployed.
LOCAL_ARTEFACTS = [
    ".sandbox/ca.pem",
    ".sandbox/server.key",
    ".hypothesis/examples/0a1b/2c3d",
    ".azurite/__queuestorage__/data",
    "__azurite_db_queue__.json",
    "__blobstorage__/x",
    ".venv/bin/python",
    "node_modules/azurite/package.json",
    ".azure/prod/.env",
    ".env",
    "local.settings.json",
    "__pycache__/function_app.cpython-311.pyc",
    "shared/__pycache__/settings.cpython-311.pyc",
    ".coverage",
    "htmlcov/index.html",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".import_linter_cache/CACHEDIR.TAG",
    ".python_packages/lib/site-packages/x.py",
    ".vscode/settings.json",
    ".DS_Store",
    # Parts of the project that are not the app (some arrive with later issues).
    "sandbox/__init__.py",
    "benchmarks/bench_queue.py",
    "connector/apiProperties.json",
    "connector/settings.json",
    "examples/logic-apps/create-and-wait.json",
    ".github/workflows/ci.yml",
    ".devcontainer/devcontainer.json",
    "requirements.in",
    "requirements-dev.in",
    "requirements-dev.txt",
    "infra/main.bicep",
    "tests/test_packaging.py",
    "scripts/lock",
    "README.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    "docs/settings.md",
    "docs/diagram.png",
    ".pre-commit-config.yaml",
]


def funcignore() -> GitIgnoreSpec:
    # azd and Core Tools read .funcignore with gitignore syntax.
    return GitIgnoreSpec.from_lines(read(".funcignore").splitlines())


def deployed(paths: list[str], spec: GitIgnoreSpec) -> set[str]:
    return {path for path in paths if not spec.match_file(path)}


def is_app(path: str) -> bool:
    # Everything tracked under shared/ is the app, data files the code reads included.
    return path in APP_FILES or path.startswith(APP_PACKAGE)


def working_tree_files(spec: GitIgnoreSpec) -> list[str]:
    """Every file azd would consider: the whole folder, ignored folders pruned on the way down."""
    files = []
    for folder, folders, names in os.walk(REPO):
        relative = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        folders[:] = [name for name in folders if name != ".git" and not spec.match_file(f"{prefix}{name}/")]
        files += [f"{prefix}{name}" for name in names]
    return files


def test_the_deployment_package_of_the_repository_is_exactly_the_app() -> None:
    tracked = tracked_files()
    package = deployed(tracked, funcignore())
    expected = {path for path in tracked if is_app(path)}
    assert package == expected
    assert package >= APP_FILES
    assert "shared/__init__.py" in package and "shared/settings.py" in package


def test_no_local_artefact_or_project_tooling_is_deployed() -> None:
    assert deployed(LOCAL_ARTEFACTS, funcignore()) == set()


def test_nothing_in_this_working_tree_but_the_app_would_be_deployed() -> None:
    spec = funcignore()
    assert {path for path in deployed(working_tree_files(spec), spec) if not is_app(path)} == set()


def test_the_check_fails_when_funcignore_misses_something() -> None:
    # The guard of the tests above: drop the .sandbox/ line and the sandbox's server key would be deployed.
    lines = [line for line in read(".funcignore").splitlines() if line.strip() != ".sandbox/"]
    assert deployed([".sandbox/server.key"], GitIgnoreSpec.from_lines(lines)) == {".sandbox/server.key"}
    assert deployed(["function_app.py", "shared/x.py"], GitIgnoreSpec.from_lines(["*.py"])) == set()


#: What an interrupted write of local.settings.json leaves behind: the settings, secrets included.
SETTINGS_TEMP_FILES = ["local.settings.json.tmp", ".local.settings.json.tmp"]


def test_a_settings_write_left_half_done_is_neither_deployed_nor_committed() -> None:
    assert deployed(SETTINGS_TEMP_FILES, funcignore()) == set()
    gitignore = GitIgnoreSpec.from_lines(read(".gitignore").splitlines())
    assert [path for path in SETTINGS_TEMP_FILES if not gitignore.match_file(path)] == []
