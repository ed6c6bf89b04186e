"""The README stays true: its test command is what CI runs, and it documents every setting the code reads."""

import json
import re
import subprocess
import uuid
from pathlib import Path

from azure.storage.queue import QueueClient

from shared.settings import ALL_SETTINGS, DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^scripts/check$", README, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/check$", ci, re.MULTILINE)


def test_every_setting_is_in_the_readme_table_with_its_default():
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    for name in ALL_SETTINGS:
        [row] = [r for r in rows if f"`{name}`" in r.split("|")[1]]
        if name in DEFAULTS:
            assert f"`{DEFAULTS[name]}`" in row, name


def test_sample_settings_list_every_setting_with_the_defaults():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in ALL_SETTINGS:
        assert name in values, name
        if name in DEFAULTS:
            assert values[name] == DEFAULTS[name], name


def test_the_repository_stands_alone_without_the_leads_documents():
    # Issue 12 point 7: the leads' folder beside the repository is not part of it; no file may send a reader
    # there for the contract, the Partner Center facts or the design (CI's tools there are another matter).
    leads_docs = [f"../shared/{name}.md" for name in ("contract", "partner-center", "design", "style")]
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    cited = {
        (path, doc)
        for path in listing.stdout.split("\0")
        if path and (ROOT / path).is_file()
        for doc in leads_docs
        if doc in (ROOT / path).read_text(encoding="utf-8", errors="replace")
    }
    assert cited == set()


def test_readme_starts_azurite_as_the_tests_do():
    commands = [line for line in README.splitlines() if line.startswith("npx azurite ")]
    assert commands
    for command in commands:
        assert "--skipApiVersionCheck" in command and "--disableTelemetry" in command, command


def test_readme_queue_snippet_works_on_a_fresh_azurite(azurite):
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", README, re.S) if "send_message" in block]
    queue = f"readme-{uuid.uuid4().hex[:12]}"
    code = snippet.replace('"UseDevelopmentStorage=true"', repr(azurite.connection_string))
    code = code.replace('"product-upgrade-requests"', repr(queue))
    assert queue in code and azurite.connection_string in code
    for _ in range(2):  # the queue does not exist yet, then it does
        exec(compile(code, "README.md", "exec"), {})
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    assert len(list(client.receive_messages(max_messages=10))) == 2
