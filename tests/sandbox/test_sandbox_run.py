"""scripts/run: Azurite, the sandbox, local.settings.json and the queues are up when `func start` runs.

The runs happen in a scratch copy of the project (links to this checkout's .venv, node_modules and code), so
the developer's own local.settings.json and .sandbox/ are never touched. `func` is a stand-in on PATH that
records what it was given and what it could reach.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import certifi
import jsonschema
import pytest

from sandbox import azurite, customers, run
from sandbox.run import DEV_STORAGE, SANDBOX_DEFAULTS, local_settings, points_at_real_partner
from sandbox.server import FakeHTTPServer, RecordedRequest, Response
from shared.settings import Settings
from shared.upgrades import runtime
from tests.harness import user_functions

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT.parent / "shared" / "schemas"
LINKED = (".venv", "node_modules", "sandbox", "shared", "function_app.py", "host.json", "local.settings.sample.json")
LINKED += ("requirements.txt", "requirements-dev.txt", "package.json", "package-lock.json")
RUN_TIMEOUT = 120

#: The stand-in `func`: records its arguments and environment, and whether what local.settings.json names is up.
STAND_IN_FUNC = """\
#!{python}
import json, os, socket, sys
import requests
from azure.storage.queue import QueueServiceClient

def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False

values = json.load(open("local.settings.json"))["Values"]
storage = values["AzureWebJobsStorage"]
if storage == "UseDevelopmentStorage=true":
    storage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};" + ";".join(
        f"{{name}}Endpoint=http://127.0.0.1:{{port}}/devstoreaccount1"
        for name, port in (("Blob", 10000), ("Queue", 10001), ("Table", 10002))
    )
ports = [int(part.split(":")[2].split("/")[0]) for part in storage.split(";") if "Endpoint=http" in part]
queues = [q.name for q in QueueServiceClient.from_connection_string(storage).list_queues()]
ca = values["REQUESTS_CA_BUNDLE"]
openid = requests.get(values["PARTNER_CENTER_AUTHORITY_HOST"] + "/" + values["PARTNER_CENTER_TENANT_ID"]
                      + "/v2.0/.well-known/openid-configuration", verify=ca, timeout=5)
partner_center = requests.post(values["PARTNER_CENTER_BASE_URL"] + "/v1/productupgrades", json={{}},
                               verify=ca, timeout=5)
record = {{
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "virtual_env": os.environ.get("VIRTUAL_ENV"),
    "path_head": os.environ["PATH"].split(os.pathsep)[0],
    "requests_ca_bundle": os.environ.get("REQUESTS_CA_BUNDLE"),
    "storage_ports": ports,
    "storage_up": [accepts(port) for port in ports],
    "queues": queues,
    "openid_status": openid.status_code,
    "partner_center_status": partner_center.status_code,
    "partner_center_code": partner_center.json().get("code"),
    "pid": os.getpid(),
}}
json.dump(record, open(os.environ["FUNC_RECORD"], "w"))
"""


def make_project(root: Path) -> Path:
    """A scratch project: scripts copied, the rest linked to this checkout."""
    project = root / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("run", "check"):
        shutil.copy2(ROOT / "scripts" / name, project / "scripts" / name)
    for name in LINKED:
        (project / name).symlink_to(ROOT / name)
    return project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def path_without_func() -> str:
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not (Path(d) / "func").exists())


def gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run.pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


@dataclass
class FuncRun:
    project: Path
    result: subprocess.CompletedProcess[str]
    #: What the stand-in func recorded.
    record: dict[str, Any]
    #: local.settings.json as func found it.
    settings: dict[str, Any]


@pytest.fixture(scope="module")
def func_run(tmp_path_factory: pytest.TempPathFactory) -> FuncRun:
    """One `scripts/run` with a stand-in `func` on PATH (shared by the tests below: it takes a few seconds)."""
    root = tmp_path_factory.mktemp("run")
    project = make_project(root)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "func"
    stand_in.write_text(STAND_IN_FUNC.format(python=sys.executable, key=azurite.ACCOUNT_KEY))
    stand_in.chmod(0o755)
    record_path = root / "func-record.json"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{path_without_func()}", "FUNC_RECORD": str(record_path)}
    env["REQUESTS_CA_BUNDLE"] = certifi.where()  # exported by the shell: must not hide the sandbox's CA from func
    result = subprocess.run(
        ["bash", "scripts/run"], cwd=project, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    settings = json.loads((project / "local.settings.json").read_text())
    return FuncRun(project, result, json.loads(record_path.read_text()), settings)


def test_run_starts_func_in_the_project_with_its_virtualenv(func_run: FuncRun) -> None:
    record, project = func_run.record, func_run.project
    assert record["argv"] == ["start"]
    assert Path(record["cwd"]) == project
    assert Path(record["virtual_env"]) == project / ".venv"
    assert Path(record["path_head"]) == project / ".venv" / "bin"
    assert Path(record["requests_ca_bundle"]) == project / ".sandbox" / "ca.pem"


def test_azurite_and_the_sandbox_were_up_when_func_ran(func_run: FuncRun) -> None:
    record, values = func_run.record, func_run.settings["Values"]
    # Azurite (blob, queue, table) on the ports local.settings.json names; the queues the bindings name exist.
    ports = record["storage_ports"]
    assert len(ports) == 3 and all(record["storage_up"])
    storage = values["AzureWebJobsStorage"]
    assert storage == DEV_STORAGE or all(f"127.0.0.1:{port}/" in storage for port in ports)
    assert sorted(record["queues"]) == sorted(SAMPLE_QUEUES)
    # The sandbox at the URLs local.settings.json names, trusted through its CA.
    assert values["PARTNER_CENTER_BASE_URL"].startswith("https://127.0.0.1:")
    assert values["PARTNER_CENTER_AUTHORITY_HOST"].startswith("https://127.0.0.1:")
    assert Path(values["REQUESTS_CA_BUNDLE"]) == func_run.project / ".sandbox" / "ca.pem"
    assert record["openid_status"] == 200
    assert (record["partner_center_status"], record["partner_center_code"]) == (401, "800001")  # no token: refused
    assert values["PRODUCT_UPGRADE_POLL_SECONDS"] == SANDBOX_DEFAULTS["PRODUCT_UPGRADE_POLL_SECONDS"]
    assert "00000000-0000-0000-0000-000000000006  failing upgrade" in func_run.result.stdout


def test_everything_it_started_has_stopped(func_run: FuncRun) -> None:
    values = func_run.settings["Values"]
    assert not (func_run.project / ".sandbox" / "run.json").exists()
    assert not any(azurite.accepts(port) for port in func_run.record["storage_ports"])
    assert not azurite.accepts(int(urlsplit(values["PARTNER_CENTER_BASE_URL"]).port or 0))
    assert not azurite.accepts(int(urlsplit(values["PARTNER_CENTER_AUTHORITY_HOST"]).port or 0))


def test_local_settings_written_by_run_are_readable_by_their_owner_only(func_run: FuncRun) -> None:
    # They hold the app secret and the refresh token (the sandbox's here; a real partner's after consent).
    assert stat.S_IMODE((func_run.project / "local.settings.json").stat().st_mode) == 0o600


def test_local_settings_match_their_schema(func_run: FuncRun) -> None:
    if not SCHEMAS.is_dir():
        pytest.skip(f"stored schemas not found at {SCHEMAS}")
    schema = json.loads((SCHEMAS / "schemastore" / "local.settings.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [error.message for error in validator.iter_errors(func_run.settings)] == []
    broken = {**func_run.settings, "IsEncrypted": "no"}
    assert list(validator.iter_errors(broken))  # the schema does check


SAMPLE_QUEUES = [
    json.loads((ROOT / "local.settings.sample.json").read_text())["Values"][name] for name in run.QUEUE_SETTINGS
]


def test_without_func_it_offers_the_command_line_and_stop_ends_it(project: Path) -> None:
    env = {**os.environ, "PATH": path_without_func()}
    proc = subprocess.Popen(
        ["bash", "scripts/run"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output = read_until(proc, "scripts/run: ready; Ctrl+C to stop")
        assert "Azure Functions Core Tools (`func`) is not on PATH" in output
        assert "npm install -g azure-functions-core-tools@4" in output
        assert (
            f"REQUESTS_CA_BUNDLE=.sandbox/ca.pem .venv/bin/python -m shared.cli upgrade {customers.ELIGIBLE}" in output
        )
        recorded = json.loads((project / ".sandbox" / "run.json").read_text())
        assert recorded["runner"]["pid"] == proc.pid
        stop = subprocess.run(
            ["bash", "scripts/run", "stop"], cwd=project, env=env, capture_output=True, text=True, timeout=60
        )
        assert f"runner (pid {proc.pid})" in stop.stdout
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert gone(recorded["azurite"]["pid"])
    assert not (project / ".sandbox" / "run.json").exists()


def test_stop_ends_what_a_killed_run_left_behind(project: Path) -> None:
    env = {**os.environ, "PATH": path_without_func()}
    proc = subprocess.Popen(
        ["bash", "scripts/run", "start", "--no-func"], cwd=project, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        read_until(proc, "scripts/run: ready; Ctrl+C to stop")
        recorded = json.loads((project / ".sandbox" / "run.json").read_text())
        proc.send_signal(signal.SIGKILL)  # no clean-up: Azurite stays
        proc.wait(10)
        assert run.pid_alive(recorded["azurite"]["pid"])
        subprocess.run(["bash", "scripts/run", "reset"], cwd=project, env=env, capture_output=True, timeout=60)
        assert gone(recorded["azurite"]["pid"])
        assert not (project / ".sandbox").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_leaves_alone_a_process_that_took_a_recorded_pid(project: Path) -> None:
    # After a crash, a recorded pid can belong to a stranger by the time `stop` runs, even one whose command
    # line says func, azurite or sandbox.run. Only the process recorded (its executable, its start time) is ended.
    command = [sys.executable, "-c", "import time; time.sleep(120)", "sandbox.run", "func", "azurite"]
    strangers = [subprocess.Popen(command) for _ in range(3)]
    try:
        identities = [run.process_identity(p.pid) for p in strangers]
        assert all(identities)
        (project / ".sandbox").mkdir()
        record = {
            "runner": strangers[0].pid,  # the format of old: a bare pid, nothing to tell a stranger by
            "func": {**identities[1], "started": "Thu Jan  1 00:00:00 1970"},  # started before: not the same
            "azurite": {**identities[2], "executable": "/usr/bin/node"},  # another program: not the same
        }
        (project / ".sandbox" / "run.json").write_text(json.dumps(record))

        stop = subprocess.run(["bash", "scripts/run", "stop"], cwd=project, capture_output=True, text=True, timeout=60)

        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert [p.poll() for p in strangers] == [None, None, None], stop.stdout
        assert "nothing to stop" in stop.stdout
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = RUN_TIMEOUT) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == marker:
            return "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError("scripts/run ended early:\n" + "".join(lines))


# -- local.settings.json ---------------------------------------------------------------------------------

SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())
SANDBOX_VALUES = {"PARTNER_CENTER_BASE_URL": "https://127.0.0.1:8444", "REQUESTS_CA_BUNDLE": "/x/ca.pem"}


def test_sandbox_settings_keep_the_users_changes_but_not_old_sandbox_values() -> None:
    existing = {
        "IsEncrypted": False,
        "Host": {"LocalHttpPort": 7072},
        "Values": {"PRODUCT_UPGRADE_POLL_SECONDS": "2", "PARTNER_CENTER_BASE_URL": "https://127.0.0.1:9999"},
    }
    document = local_settings(SAMPLE, existing, SANDBOX_VALUES, "conn")
    assert document["Host"] == {"LocalHttpPort": 7072}
    values = document["Values"]
    assert values["PRODUCT_UPGRADE_POLL_SECONDS"] == "2"
    assert values["PRODUCT_UPGRADE_DEFER_SECONDS"] == SANDBOX_DEFAULTS["PRODUCT_UPGRADE_DEFER_SECONDS"]
    assert values["PARTNER_CENTER_BASE_URL"] == "https://127.0.0.1:8444"
    assert values["AzureWebJobsStorage"] == "conn"
    assert set(SAMPLE["Values"]) <= set(values)


def test_real_partner_settings_are_left_alone_but_for_azurite() -> None:
    real = {"Values": {"PARTNER_CENTER_BASE_URL": "https://api.partnercenter.microsoft.com", "X": "1"}}
    assert points_at_real_partner(real["Values"])
    assert not points_at_real_partner({"PARTNER_CENTER_BASE_URL": "https://localhost:8444"})
    assert not points_at_real_partner({"PARTNER_CENTER_BASE_URL": ""})
    document = local_settings(SAMPLE, real, None, "azurite-on-free-ports")
    assert document["Values"] == {**real["Values"], "AzureWebJobsStorage": "azurite-on-free-ports"}
    cloud = {"Values": {**real["Values"], "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=prod;"}}
    assert local_settings(SAMPLE, cloud, None, "x") == cloud


# -- scripts/run demo --------------------------------------------------------------------------------------


class LocalHost(FakeHTTPServer):
    """What `func start` serves on localhost:7071 for the HTTP routes the demo calls: the app's own functions."""

    def handle(self, req: RecordedRequest) -> Response:
        functions = user_functions()
        parts = req.path.strip("/").split("/")
        route_params = {}
        if req.method == "POST" and parts == ["api", "productupgrades"]:
            name = "create_product_upgrade"
        elif req.method == "GET" and parts[:2] == ["api", "productupgrades"] and len(parts) == 3:
            name, route_params = "get_product_upgrade_status", {"upgradeId": parts[2]}
        else:
            return Response(404)
        request = func.HttpRequest(
            req.method,
            f"{self.url}{req.target}",
            headers=dict(req.headers),
            params=dict(parse_qsl(urlsplit(req.target).query)),
            route_params=route_params,
            body=req.body,
        )
        response: func.HttpResponse = functions[name](request)
        return Response(response.status_code, response.get_body(), dict(response.headers))


@pytest.fixture
def local_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHost]:
    with run.running_sandbox(tmp_path, entra_port=0, partner_center_port=0, completed_after_seconds=1) as sandbox:
        for name, value in sandbox.settings().items():
            monkeypatch.setenv(name, value)
        runtime.install(runtime.Runtime.build(Settings.from_env(), poll_interval_seconds=1))
        try:
            with LocalHost(use_tls=False) as host:
                yield host
        finally:
            runtime.install(None)


def test_demo_follows_the_upgrade_to_completed(local_host: LocalHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["demo", customers.ELIGIBLE, "--url", local_host.url, "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert "POST /api/productupgrades -> 202" in out
    assert "GET /api/productupgrades/" in out
    assert '"Completed"' in out


def test_demo_fails_for_a_failing_upgrade(local_host: LocalHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["demo", customers.FAILING_UPGRADE, "--url", local_host.url, "--timeout", "30"]) == 1
    assert '"Failed"' in capsys.readouterr().out


def test_demo_reports_a_refusal_once(local_host: LocalHost, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["demo", customers.NOT_ELIGIBLE, "--url", local_host.url]) == 1
    out = capsys.readouterr().out
    assert out.startswith("POST /api/productupgrades -> 422\n")
    assert out.count('"partnerCenterErrorCode": "900108"') == 1  # the problem, printed once


def test_against_a_real_partner_only_azurite_starts_and_the_file_is_kept(project: Path) -> None:
    real = dict(SAMPLE)
    real["Values"] = {
        **SAMPLE["Values"],
        "PARTNER_CENTER_BASE_URL": "https://api.partnercenter.microsoft.com",
        "REQUESTS_CA_BUNDLE": "/old/sandbox/ca.pem",
    }
    (project / "local.settings.json").write_text(json.dumps(real))
    env = {**os.environ, "PATH": path_without_func()}
    proc = subprocess.Popen(
        ["bash", "scripts/run", "--no-func"], cwd=project, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        output = read_until(proc, "scripts/run: ready; Ctrl+C to stop")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "points at https://api.partnercenter.microsoft.com: not starting the sandbox" in output
    assert "warning: REQUESTS_CA_BUNDLE is set" in output
    assert "sandbox: Entra ID" not in output
    kept = json.loads((project / "local.settings.json").read_text())
    storage = kept["Values"].pop("AzureWebJobsStorage")
    assert storage == DEV_STORAGE or "AccountName=devstoreaccount1;" in storage  # Azurite, maybe on other ports
    assert kept == {**real, "Values": {k: v for k, v in real["Values"].items() if k != "AzureWebJobsStorage"}}
    assert (project / ".azurite").is_dir()  # kept between runs, unlike the sandbox's


def test_demo_without_the_functions_host_says_so_and_gives_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{azurite.free_port()}"

    assert run.main(["demo", customers.ELIGIBLE, "--url", url]) == 1

    err = capsys.readouterr().err
    assert f"the functions host is not running at {url}" in err
    assert f"python -m shared.cli upgrade {customers.ELIGIBLE} --wait" in err
    assert "Traceback" not in err and "HTTPConnectionPool" not in err
