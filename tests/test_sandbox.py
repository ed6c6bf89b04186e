"""The sandbox process the README points to: start it, take its printed settings, upgrade a customer."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sandbox.cli import READY_LINE
from shared import runtime
from shared.settings import ALL_SETTINGS, Settings
from tests.fakes import CUSTOMER_ID
from tests.harness import App

ROOT = Path(__file__).resolve().parents[1]


def test_sandbox_serves_what_it_prints(monkeypatch, tmp_path):
    command = [sys.executable, "-m", "sandbox", "--entra-port", "0", "--partner-center-port", "0"]
    proc = subprocess.Popen(
        [*command, "--dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = []
        for line in proc.stdout:
            if line.strip() == READY_LINE:
                break
            lines.append(line)
        values = json.loads("".join(lines))["Values"]
        for name in ALL_SETTINGS:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        runtime.install(runtime.Runtime.build(Settings.from_env(), poll_interval_seconds=0))
        app = App(partner_center=None, entra=None)
        created = app.create({"customerId": CUSTOMER_ID})
        assert created.status_code == 202, created.get_body()
        upgrade_id = json.loads(created.get_body())["upgradeId"]
        statuses = [app.status(upgrade_id, {"customerId": CUSTOMER_ID}).status_code for _ in range(3)]
        assert statuses == [202, 202, 200]
    finally:
        runtime.install(None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "1 upgrade(s) created" in err
    assert os.path.exists(values["REQUESTS_CA_BUNDLE"])
