"""``scripts/run``: the app on this machine in one command: Azurite, the sandbox, local.settings.json, func start.

    scripts/run [start] [--no-func]   Azurite + the sandbox (unless local.settings.json points at a real
                                      partner), local.settings.json written, queues created, then `func start`;
                                      Ctrl+C stops all of it
    scripts/run demo [CUSTOMER_ID]    call the running app as a Logic App does: create, then follow Location
    scripts/run stop                  stop what a previous run left behind (after a crash or kill -9)
    scripts/run reset                 stop, then forget all local state (Azurite's data, the sandbox's CA)

The processes this starts are recorded in ``.sandbox/run.json`` (pid, executable, start time) so ``stop`` ends
exactly those, never a process that was given one of their pids after a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandbox.azurite import (
    ACCOUNT_NAME,
    DEV_STORAGE,
    Azurite,
    AzuriteError,
    port_free,
)
from sandbox.cli import DEFAULT_ENTRA_PORT, DEFAULT_PARTNER_CENTER_PORT, customers_table, running_sandbox, write_json
from sandbox.customers import ELIGIBLE

# absolute(), not resolve(): a linked copy of the project (the tests make one) keeps its own state.
REPO = Path(__file__).absolute().parents[1]
STATE = REPO / ".sandbox"
RUN_FILE = STATE / "run.json"
LOCAL_SETTINGS = REPO / "local.settings.json"
SAMPLE_SETTINGS = REPO / "local.settings.sample.json"
#: Azurite's data with the sandbox: wiped at each start, because the sandbox forgets its upgrades when it stops
#: (a ledger that outlived them would replay upgrade ids the new sandbox answers 404 for).
SANDBOX_AZURITE = STATE / "azurite"
#: Azurite's data against a real Partner Center: kept.
AZURITE_DATA = REPO / ".azurite"
#: Queues the app's bindings and scheduler use (setting name -> default).
QUEUE_SETTINGS = (
    "PRODUCT_UPGRADE_REQUESTS_QUEUE",
    "PRODUCT_UPGRADE_RESULTS_QUEUE",
    "PRODUCT_UPGRADE_TRACKING_QUEUE",
    "PRODUCT_UPGRADE_OUTCOMES_QUEUE",
)
#: With the sandbox, follow upgrades every few seconds rather than the production 300 s.
SANDBOX_DEFAULTS = {"PRODUCT_UPGRADE_POLL_SECONDS": "5", "PRODUCT_UPGRADE_DEFER_SECONDS": "60"}
STARTUP_TIMEOUT = 60.0
#: The command line's equivalent of the demo, against the sandbox (the shell's CA bundle would win over the file's).
CLI_EQUIVALENT = "REQUESTS_CA_BUNDLE=.sandbox/ca.pem .venv/bin/python -m shared.cli upgrade {customer} --wait"
CORE_TOOLS_HELP = """\
Azure Functions Core Tools (`func`) is not on PATH. Install version 4, then run scripts/run again:
  npm install -g azure-functions-core-tools@4 --unsafe-perm true
  (or: winget install Microsoft.Azure.FunctionsCoreTools / brew tap azure/functions && brew install
  azure-functions-core-tools@4 / Microsoft's package feed for your Linux distribution; see
  https://learn.microsoft.com/azure/azure-functions/functions-run-local)
Meanwhile Azurite and the sandbox keep running, and the command line works against them with the same
local.settings.json, from another terminal (the shell's environment wins over local.settings.json, hence the
CA bundle given again):
  {cli}
Ctrl+C stops Azurite and the sandbox."""


HOST_NOT_RUNNING = """\
the functions host is not running at {url}: start it in another terminal with `scripts/run` (it needs Azure
Functions Core Tools, `func`), then run the demo again. Without the host, the command line does the same through
the same workflow, against the sandbox `scripts/run --no-func` keeps running:
  {cli}"""


class RunError(Exception):
    """Something a person can fix; printed without a traceback."""


# -- processes ---------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Running (a zombie, ended but not yet reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return not state.stdout.strip().startswith("Z")


def executable_of(pid: int) -> str:
    """The path of the program ``pid`` runs: ``/proc/PID/exe`` on Linux, ``ps -o comm=`` (a full path) on macOS."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            return os.readlink(proc / str(pid) / "exe")
        except OSError:
            return ""
    result = subprocess.run(["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def process_identity(pid: int) -> dict[str, Any] | None:
    """What tells the process ``pid`` from a later one given the same pid: its executable and its start time.
    None when no such process runs."""
    started = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False)
    if not started.stdout.strip():
        return None
    return {"pid": pid, "executable": executable_of(pid), "started": started.stdout.strip()}


def settled_identity(pid: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """:func:`process_identity` once the process runs its own program: a script started through
    ``#!/usr/bin/env node`` is ``env`` for a moment before it becomes ``node``."""
    deadline = time.monotonic() + timeout
    identity = process_identity(pid)
    while identity and Path(identity["executable"]).name == "env" and time.monotonic() < deadline:
        time.sleep(0.02)
        identity = process_identity(pid)
    return identity


def record_process(name: str, pid: int) -> None:
    """Add the process ``pid`` to ``.sandbox/run.json`` under ``name``, with what identifies it."""
    write_json(RUN_FILE, {**read_run_file(), name: settled_identity(pid) or {"pid": pid}})


def still_recorded(entry: object) -> int | None:
    """The pid of a recorded process when that very process still runs (same executable, same start time);
    None for anything else: a pid taken since by another process, or a record of old holding a bare pid."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pid"), int) or "started" not in entry:
        return None
    pid = int(entry["pid"])
    if pid == os.getpid() or not pid_alive(pid):
        return None
    current = process_identity(pid)
    if current is None or (current["executable"], current["started"]) != (entry.get("executable"), entry["started"]):
        return None
    return pid


def terminate(pid: int, *, group: bool, timeout: float = 10.0) -> None:
    """SIGTERM (to the process group when ``group``), then SIGKILL after ``timeout``."""
    send = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        send(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.1)
        if pid_alive(pid):
            send(pid, signal.SIGKILL)


def read_run_file() -> dict[str, Any]:
    try:
        return dict(json.loads(RUN_FILE.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def stop_recorded() -> list[str]:
    """Stop the processes a previous run recorded, if they are still the ones it started (the same executable,
    started at the same time: a pid reused after a crash belongs to a stranger); what was stopped."""
    recorded = read_run_file()
    stopped = []
    # The runner first (it stops its own children), then whatever it left behind.
    for name, group in (("runner", False), ("func", False), ("azurite", True)):
        pid = still_recorded(recorded.get(name))
        if pid is not None:
            terminate(pid, group=group)
            stopped.append(f"{name} (pid {pid})")
    RUN_FILE.unlink(missing_ok=True)
    return stopped


# -- local.settings.json -----------------------------------------------------------------------------------


def load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunError(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Values", {}), dict):
        raise RunError(f"{path.name} must be an object with a `Values` object")
    return document


def is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def points_at_real_partner(values: Mapping[str, Any]) -> bool:
    """True when local.settings.json names a Partner Center that is not a local sandbox."""
    base_url = values.get("PARTNER_CENTER_BASE_URL") or ""
    return isinstance(base_url, str) and bool(base_url) and not is_loopback(base_url)


def is_azurite(connection: str) -> bool:
    return connection == DEV_STORAGE or f"AccountName={ACCOUNT_NAME};" in connection


def local_settings(
    sample: Mapping[str, Any],
    existing: Mapping[str, Any] | None,
    sandbox_values: Mapping[str, str] | None,
    storage: str,
) -> dict[str, Any]:
    """The local.settings.json to write.

    With the sandbox: the sample's Values, the sandbox's defaults, what the existing file changed, then the
    sandbox's own values (its ports and CA change at each start) and Azurite's connection. Against a real
    partner: the existing file as it is, but for Azurite's connection when it already used Azurite.
    """
    if sandbox_values is None:
        assert existing is not None
        document = dict(existing)
        values = dict(existing.get("Values", {}))
        if is_azurite(str(values.get("AzureWebJobsStorage", DEV_STORAGE))):
            values["AzureWebJobsStorage"] = storage
        document["Values"] = values
        return document
    document = {**sample, **(existing or {})}
    values = {**sample.get("Values", {}), **SANDBOX_DEFAULTS}
    values.update((existing or {}).get("Values", {}))
    values.update(sandbox_values)
    values["AzureWebJobsStorage"] = storage
    document["Values"] = values
    return document


def create_queues(connection: str, values: Mapping[str, Any]) -> list[str]:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient

    service = QueueServiceClient.from_connection_string(connection)
    names = [str(values[name]) for name in QUEUE_SETTINGS if values.get(name)]
    for name in names:
        with contextlib.suppress(ResourceExistsError):
            service.create_queue(name)
    return names


# -- commands ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_raises_interrupt() -> Iterator[None]:
    """SIGTERM (from `scripts/run stop`, or a test) ends a run the way Ctrl+C does."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(text: str) -> None:
    print(f"scripts/run: {text}", flush=True)


def sandbox_port(default: int) -> int:
    return default if port_free(default) else 0


def run_func(func: str, values: Mapping[str, Any]) -> int:
    venv_bin = REPO / ".venv" / "bin"
    env = dict(os.environ)
    # What `. .venv/bin/activate` does: the Functions host starts the Python worker with this interpreter.
    env["VIRTUAL_ENV"] = str(REPO / ".venv")
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    if values.get("REQUESTS_CA_BUNDLE"):
        # The host lets the shell's environment win over local.settings.json; a REQUESTS_CA_BUNDLE exported
        # there (corporate proxies, CI images) would hide the sandbox's CA.
        env["REQUESTS_CA_BUNDLE"] = str(values["REQUESTS_CA_BUNDLE"])
    proc = subprocess.Popen([func, "start"], cwd=REPO, env=env)
    record_process("func", proc.pid)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        if proc.poll() is None:
            proc.terminate()  # Ctrl+C reached func already; SIGTERM from `stop` did not
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def start(no_func: bool) -> int:
    runner = still_recorded(read_run_file().get("runner"))
    if runner is not None:
        raise RunError(f"already running (pid {runner}); stop it with Ctrl+C there, or `scripts/run stop`")
    stop_recorded()  # leftovers of a run that was killed
    STATE.mkdir(exist_ok=True)
    sample = load_json(SAMPLE_SETTINGS)
    existing = load_json(LOCAL_SETTINGS) if LOCAL_SETTINGS.exists() else None
    real_partner = existing is not None and points_at_real_partner(existing.get("Values", {}))
    if not real_partner:
        shutil.rmtree(SANDBOX_AZURITE, ignore_errors=True)
    location = AZURITE_DATA if real_partner else SANDBOX_AZURITE
    azurite = Azurite(location=location, log=STATE / "azurite.log", default_ports=True, own_session=True)
    with terminate_raises_interrupt(), contextlib.ExitStack() as stack:
        try:
            write_json(RUN_FILE, {})
            record_process("runner", os.getpid())
            stack.callback(RUN_FILE.unlink, missing_ok=True)
            stack.callback(azurite.stop)
            start_azurite(azurite)
            sandbox_values = None if real_partner else start_sandbox(stack)
            if real_partner and existing is not None:
                say_real_partner(existing["Values"])
            document = local_settings(sample, existing, sandbox_values, azurite.connection_string)
            write_json(LOCAL_SETTINGS, document)
            say(f"wrote {LOCAL_SETTINGS.name}")
            queues = create_queues(azurite.connection_string, document["Values"])
            say(f"queues: {', '.join(queues)}")
            return serve(document["Values"], no_func=no_func)
        except KeyboardInterrupt:
            say("stopping")
            return 130


def start_azurite(azurite: Azurite) -> None:
    try:
        azurite.start()
    except AzuriteError as exc:
        raise RunError(str(exc)) from None
    if azurite.proc is not None:
        record_process("azurite", azurite.proc.pid)  # it is node by now (its ports answer)
    say(f"Azurite: blob {azurite.ports['blob']}, queue {azurite.ports['queue']}, table {azurite.ports['table']}")


def start_sandbox(stack: contextlib.ExitStack) -> dict[str, str]:
    """The local Entra ID and Partner Center, until ``stack`` closes; the settings that point at them."""
    sandbox = stack.enter_context(
        running_sandbox(
            STATE,
            entra_port=sandbox_port(DEFAULT_ENTRA_PORT),
            partner_center_port=sandbox_port(DEFAULT_PARTNER_CENTER_PORT),
        )
    )
    say(f"sandbox: Entra ID {sandbox.entra.url}, Partner Center {sandbox.partner_center.url}")
    print(customers_table(sandbox.population), flush=True)
    return sandbox.settings()


def say_real_partner(values: Mapping[str, Any]) -> None:
    say(f"local.settings.json points at {values['PARTNER_CENTER_BASE_URL']}: not starting the sandbox")
    if values.get("REQUESTS_CA_BUNDLE"):
        say("warning: REQUESTS_CA_BUNDLE is set; remove it to trust the usual CAs of a real Partner Center")


def serve(values: Mapping[str, Any], *, no_func: bool) -> int:
    """``func start`` when Core Tools are here (until it ends), else keep Azurite and the sandbox up until Ctrl+C."""
    func = None if no_func else shutil.which("func")
    if func is not None:
        say("func start (Ctrl+C stops it, then Azurite and the sandbox)")
        return run_func(func, values)
    if not no_func:
        print(CORE_TOOLS_HELP.format(cli=CLI_EQUIVALENT.format(customer=ELIGIBLE)), flush=True)
    say("ready; Ctrl+C to stop")
    while True:
        time.sleep(3600)


def stop() -> int:
    stopped = stop_recorded()
    say("stopped " + ", ".join(stopped) if stopped else "nothing to stop")
    return 0


def reset() -> int:
    stop()
    for path in (STATE, AZURITE_DATA):
        shutil.rmtree(path, ignore_errors=True)
    say(f"removed {STATE.name}/ and {AZURITE_DATA.name}/ (local.settings.json is kept; the next run rewrites it)")
    return 0


def demo(customer_id: str, url: str, timeout: float) -> int:
    """Create an upgrade through the running app and follow ``Location`` until it has ended."""
    import requests

    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        try:
            response = session.post(
                f"{url.rstrip('/')}/api/productupgrades",
                json={"customerId": customer_id, "productFamily": "Azure"},
                timeout=60,
            )
        except requests.ConnectionError:
            cli = CLI_EQUIVALENT.format(customer=customer_id)
            raise RunError(HOST_NOT_RUNNING.format(url=url, cli=cli)) from None
        print(f"POST /api/productupgrades -> {response.status_code}\n{response.text}", flush=True)
        followed = False
        while response.status_code == 202 and "Location" in response.headers:
            followed = True
            wait = float(response.headers.get("Retry-After") or 5)
            if time.monotonic() + wait > deadline:
                say(f"gave up after {timeout:.0f} s; the upgrade is still running")
                return 1
            time.sleep(wait)
            location = response.headers["Location"]
            response = session.get(location, timeout=60)
            print(f"GET {urlsplit(location).path} -> {response.status_code}", flush=True)
        if followed:
            print(response.text, flush=True)
    ended = response.status_code == 200 and str(response.json().get("status", "")).lower() == "completed"
    return 0 if ended else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    start_parser = commands.add_parser("start", help="the default: Azurite, the sandbox, func start")
    start_parser.add_argument("--no-func", action="store_true", help="everything but func start")
    commands.add_parser("stop", help="stop what a previous run left running")
    commands.add_parser("reset", help="stop, then remove Azurite's data and the sandbox's state")
    demo_parser = commands.add_parser("demo", help="create an upgrade through the running app and follow it")
    demo_parser.add_argument("customer_id", nargs="?", default=ELIGIBLE)
    demo_parser.add_argument("--url", default="http://localhost:7071")
    demo_parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            return stop()
        if args.command == "reset":
            return reset()
        if args.command == "demo":
            return demo(args.customer_id, args.url, args.timeout)
        return start(no_func=bool(getattr(args, "no_func", False)))
    except RunError as exc:
        print(f"scripts/run: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
