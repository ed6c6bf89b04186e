"""The benchmark's quick mode runs end to end (CI proves it runs; speed targets live in its output, not here).

What is asserted are facts, not speeds: every section produced its figures, the outbound calls are the
contract's (one token request, three secret reads, one Partner Center POST per create), and the drain lost
and duplicated nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_runs_every_section(tmp_path):
    output = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    document = json.loads(output.read_text())
    assert document["quick"] is True
    assert set(document["results"]) == {"warm", "calls_and_memory", "cold_start", "drain", "campaign_summary"}
    rows = {(row["section"], row["figure"]): row for row in document["targets"]}
    assert all(row["verdict"] in ("PASS", "MISS", "-") for row in rows.values())
    assert "PASS" in run.stdout or "MISS" in run.stdout

    calls = document["results"]["calls_and_memory"]
    large = calls["n"][1]
    assert calls["calls_at_large_n"]["token_requests"] == 1
    assert calls["calls_at_large_n"]["key_vault_reads"] == 3
    assert calls["calls_at_large_n"]["partner_center_creates"] == large
    assert calls["storage_requests_per_create"] > 0  # the proxy saw the app's storage calls
    assert document["results"]["cold_start"]["key_vault_reads_in_flight_at_once"] == 3

    drains = [run for run in document["results"]["drain"].values() if isinstance(run, dict)]
    assert drains
    for drain in drains:
        assert drain["messages_without_result"] == 0 and drain["messages_with_two_results"] == 0
        assert drain["duplicate_upgrades"] == 0 and drain["customers_upgraded"] == drain["messages"]

    campaign = document["results"]["campaign_summary"]
    assert campaign["storage_requests_per_summary"] == 1  # one query, whatever the campaign's size
    assert campaign["counts_equal_scan"] and campaign["records_scanned"] == campaign["upgrades"]


def test_quick_discovery_benchmark_runs_and_asks_every_customer_once(tmp_path):
    output = tmp_path / "discovery.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.discovery", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(output.read_text())["results"]
    assert set(results) == {"instant", "latency", "limited"}
    for setup in results.values():
        assert setup["customers_per_second"]["median"] > 0 and setup["verdict"] in ("PASS", "MISS", "-")
        for one in setup["runs"]:
            assert one["every_customer_asked"] and one["kept_as_population"]
            # Each customer asked once, plus the calls Partner Center throttled (honoured, then asked again).
            assert one["customers"] <= one["subscriptions_calls"] <= one["customers"] + one["throttled_calls"]
