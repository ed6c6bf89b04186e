"""The benchmark's sections. Each runs the app in processes of its own and returns a JSON-able dict."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.services import ROOT, Services


def run_child(module: str, args: list[str], env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"{module} {args} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _table() -> str:
    return f"bench{uuid.uuid4().hex[:12]}"


# -- warm overhead ---------------------------------------------------------------------------------------


def warm(services: Services, *, quick: bool) -> dict[str, Any]:
    config = json.dumps({"rounds": 3 if quick else 20, "per_round": 5 if quick else 20})
    services.command("reset")
    without = run_child("benchmarks.warm", [config], services.app_env(storage=None))
    storage = services.storage_connection(counted=False)
    with_storage = run_child("benchmarks.warm", [config], services.app_env(storage=storage, table=_table()))
    return {"without_storage": without, "with_storage": with_storage}


# -- outbound calls per N and peak RSS ----------------------------------------------------------------------


def calls_and_memory(services: Services, *, quick: bool) -> dict[str, Any]:
    """N creates in a fresh process with Key Vault and storage (through the counting proxy): the calls each
    N costs, and peak RSS. Per-create storage requests are the difference between two N, over the difference
    in N, so the one-time work of a cold process (creating the table, the queues) drops out."""
    small, large = (10, 50) if quick else (100, 1000)
    repeats = 1 if quick else 2
    storage = services.storage_connection(counted=True)
    runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        for n in (small, large):
            services.command("reset")
            env = services.app_env(storage=storage, key_vault=True, table=_table())
            result = run_child("benchmarks.load", [str(n)], env)
            result["counts"] = services.counts()
            runs.append(result)
    keyed: list[dict[str, Any]] = []
    for n in (5, 15) if quick else (20, 60):
        services.command("reset")
        env = services.app_env(storage=storage, key_vault=True, table=_table())
        result = run_child("benchmarks.load", [str(n), "--keyed"], env)
        result["counts"] = services.counts()
        keyed.append(result)

    def rss(n: int) -> float:
        return statistics.median(r["max_rss_kib"] for r in runs if r["n"] == n)

    def per_create(pair: list[dict[str, Any]], key: str) -> float:
        a, b = pair[0], pair[-1]
        return float(b["counts"][key] - a["counts"][key]) / (b["n"] - a["n"])

    last_small = next(r for r in reversed(runs) if r["n"] == small)
    last_large = next(r for r in reversed(runs) if r["n"] == large)
    return {
        "n": [small, large],
        "peak_rss_kib": {str(small): rss(small), str(large): rss(large)},
        "rss_growth_kib": rss(large) - rss(small),
        "calls_at_large_n": last_large["counts"],
        "calls_at_small_n": last_small["counts"],
        "storage_requests_per_create": per_create([last_small, last_large], "storage_requests"),
        "storage_requests_per_keyed_create": per_create(keyed, "storage_requests"),
        "keyed_calls": [r["counts"] for r in keyed],
    }


# -- cold start ----------------------------------------------------------------------------------------------


def cold_start(services: Services, *, quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 15
    plain_env = services.app_env(storage=None)
    run_child("benchmarks.cold", ["function-app"], plain_env)  # compile bytecode once, outside the rounds
    imports: dict[str, list[float]] = {"azure-functions": [], "function-app": []}
    for _ in range(rounds):
        for mode in imports:
            imports[mode].append(run_child("benchmarks.cold", [mode], plain_env)["cpu"])
    ratios = [a / b for a, b in zip(imports["function-app"], imports["azure-functions"], strict=True)]

    services.command("vault_delay", seconds=0.05)  # a vault is a network round trip away
    storage = services.storage_connection(counted=False)
    first: dict[str, list[float]] = {"first-202": [], "first-202-floor": []}
    vault_in_flight: list[int] = []
    for _ in range(2 if quick else 5):
        for mode in first:
            services.command("reset")
            env = services.app_env(storage=storage, key_vault=True, table=_table())
            spawned = time.time()
            result = run_child("benchmarks.cold", [mode], env)
            first[mode].append(result["at"] - spawned)
            if mode == "first-202":
                vault_in_flight.append(services.counts()["key_vault_max_in_flight"])
    services.command("vault_delay", seconds=0.0)
    first_ratios = [a / b for a, b in zip(first["first-202"], first["first-202-floor"], strict=True)]
    return {
        "import_ratio": _summary(ratios),
        "import_cpu_ms": {mode: statistics.median(v) * 1000 for mode, v in imports.items()},
        "first_202_ratio": _summary(first_ratios),
        "first_202_wall_ms": {mode: statistics.median(v) * 1000 for mode, v in first.items()},
        "key_vault_reads_in_flight_at_once": min(vault_in_flight),
        "key_vault_delay_ms": 50,
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


# -- campaign drain ------------------------------------------------------------------------------------------


def drain(services: Services, *, quick: bool) -> dict[str, Any]:
    if quick:
        return {"R=50": drain_once(services, messages=100, rate=50, workers=2)}
    runs = {f"R={rate}": drain_once(services, messages=2000, rate=rate, workers=4) for rate in (20, 100)}
    # The harness's own pace (Azurite, the fakes, four workers on this machine) with no throttle at all: a
    # drain cannot beat it, so a MISS on drain time is read against it.
    runs["capacity"] = drain_once(services, messages=300, rate=None, workers=4)
    return runs


def drain_once(
    services: Services, *, messages: int, rate: float | None, workers: int, service_seconds: float = 0.0
) -> dict[str, Any]:
    from sandbox.azurite import Azurite

    # An Azurite of its own: the earlier sections leave thousands of messages in theirs, and Azurite's queue
    # service slows down with every message it holds.
    with Azurite() as azurite:
        return _drain_on(services, azurite.connection_string, messages, rate, workers, service_seconds)


def _drain_on(
    services: Services, connection: str, messages: int, rate: float | None, workers: int, service_seconds: float
) -> dict[str, Any]:
    from azure.storage.queue import QueueClient

    suffix = uuid.uuid4().hex[:8]
    names = {
        "PRODUCT_UPGRADE_REQUESTS_QUEUE": f"drain-requests-{suffix}",
        "PRODUCT_UPGRADE_RESULTS_QUEUE": f"drain-results-{suffix}",
    }
    requests_queue = QueueClient.from_connection_string(connection, names["PRODUCT_UPGRADE_REQUESTS_QUEUE"])
    results_queue = QueueClient.from_connection_string(connection, names["PRODUCT_UPGRADE_RESULTS_QUEUE"])
    requests_queue.create_queue()
    results_queue.create_queue()
    customers = [str(uuid.uuid4()) for _ in range(messages)]
    send: Callable[[int], object] = lambda n: requests_queue.send_message(  # noqa: E731
        json.dumps({"customerId": customers[n], "correlationId": f"drain-{n}"})
    )
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(send, range(messages)))

    services.command("reset")
    services.command("admit", rate=rate)
    services.command("service_time", seconds=service_seconds)
    env = services.app_env(storage=connection, table=_table())
    env.update(names)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a drain worker did not start")
        started = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        figures = []
        for proc in procs:
            out, _ = proc.communicate(timeout=1800)
            figures.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        services.command("admit", rate=None)
        services.command("service_time", seconds=0.0)
    elapsed = max(f["last_result_at"] for f in figures) - started
    counts = services.counts()

    results = [json.loads(message) for f in figures for message in f.pop("result_messages")]
    per_message = Counter(r["correlationId"] for r in results)
    statuses = Counter(r["status"] for r in results)
    ideal = messages / rate if rate else None
    return {
        "messages": messages,
        "rate_per_second": rate,
        "partner_center_service_seconds": service_seconds,
        "workers": workers,
        "drain_seconds": elapsed,
        "ideal_seconds": ideal,
        "drain_ratio": elapsed / ideal if ideal else None,
        "messages_per_second": messages / elapsed,
        "partner_center_calls": counts["partner_center_calls"],
        "throttled_calls": counts["partner_center_rate_limited"],
        "throttled_fraction": counts["partner_center_rate_limited"] / max(1, counts["partner_center_calls"]),
        "results": len(results),
        "statuses": dict(statuses),
        "messages_without_result": messages - len(per_message),
        "messages_with_two_results": sum(1 for n in per_message.values() if n > 1),
        "customers_upgraded": counts["distinct_customers_upgraded"],
        "duplicate_upgrades": counts["created_upgrades"] - counts["distinct_customers_upgraded"],
        "token_requests": counts["token_requests"],
        "workers_figures": figures,
    }


# -- a campaign's summary at size ------------------------------------------------------------------------------


def campaign_summary(services: Services, *, quick: bool) -> dict[str, Any]:
    """A 10,000-upgrade campaign recorded through the ledger (its counts kept as it goes): the summary's storage
    requests (counted at the proxy) and milliseconds, against the same query made bare; then its counts against a
    full scan of the campaign's records."""
    n, n_rounds = (500, 5) if quick else (10_000, 30)
    services.command("reset")
    env = services.app_env(storage=services.storage_connection(counted=True), table=_table())
    env["BENCH_FLOOR_STORAGE"] = services.storage_connection(counted=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.campaign", str(n), str(n_rounds)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the campaign process did not get ready")
        populated = services.counts()["storage"]
        services.command("reset")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "measured":
            raise RuntimeError("the campaign process did not measure")
        during = services.counts()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures["storage_requests_per_summary"] = during["storage_requests"] / n_rounds
    figures["storage_during_summaries"] = during["storage"]
    # Accepting, ending and marking sent, with the counts' queries and transactions: per upgrade, for the record.
    figures["storage_requests_per_upgrade_recorded"] = sum(populated.values()) / n
    figures["storage_while_recording"] = populated
    return figures


ALL: dict[str, Callable[..., dict[str, Any]]] = {
    "warm": warm,
    "calls_and_memory": calls_and_memory,
    "cold_start": cold_start,
    "drain": drain,
    "campaign_summary": campaign_summary,
}
