"""The benchmark's sections. Each runs the app in processes of its own and returns a JSON-able dict."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
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
        """Per create, between two N; storage requests without the pace's own (counted apart, per second)."""
        a, b = pair[0], pair[-1]
        count = float(b["counts"][key] - a["counts"][key])
        if key == "storage_requests":
            count -= b.get("pace", 0) - a.get("pace", 0)
        return count / (b["n"] - a["n"])

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
        "pace_storage_requests_at_large_n": last_large.get("pace", 0),
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

#: The sandbox's always-throttled customer (every call 429, Retry-After 30 s), hidden in one drain's messages.
THROTTLED_CUSTOMER = "00000000-0000-0000-0000-000000000005"


def drain(services: Services, *, quick: bool) -> dict[str, Any]:
    """Four worker processes drain a campaign's queue against Partner Center admitting R calls per second for the
    partner. Each run beside the harness's own pace with as many messages held and no limit at all (a drain cannot
    beat it): a MISS on drain time is the app's only where that capacity is at least 2R."""
    if quick:
        return {
            "capacity 100": drain_once(services, messages=100, rate=None, workers=2),
            "R=50": drain_once(services, messages=100, rate=50, workers=2),
        }
    runs: dict[str, Any] = {
        "capacity 500": drain_once(services, messages=500, rate=None, workers=4),
        "capacity 2000": drain_once(services, messages=2000, rate=None, workers=4),
        "R=5": drain_once(services, messages=500, rate=5, workers=4),
        "R=20": drain_once(services, messages=2000, rate=20, workers=4),
        "R=100": drain_once(services, messages=2000, rate=100, workers=4),
        "R=20 then 10": drain_once(services, messages=2000, rate=20, then=10, workers=4),
        "R=20 then 40": drain_once(services, messages=2000, rate=20, then=40, workers=4),
        "R=20, one customer always throttled": drain_once(
            services, messages=2000, rate=20, workers=4, throttled_customer=True
        ),
    }
    return runs


def ideal_seconds(messages: int, rate: float, then: float | None) -> float:
    """N/R; with a change of rate half-way (at the time the first half would take), each half at its rate."""
    if then is None:
        return messages / rate
    return messages / 2 / rate + messages / 2 / then


def drain_once(
    services: Services,
    *,
    messages: int,
    rate: float | None,
    workers: int,
    then: float | None = None,
    throttled_customer: bool = False,
    service_seconds: float = 0.0,
) -> dict[str, Any]:
    from sandbox.azurite import Azurite

    # An Azurite of its own: the earlier sections leave thousands of messages in theirs, and Azurite's queue
    # service slows down with every message it holds.
    with Azurite() as azurite:
        run = _Drain(services, azurite.connection_string, messages, rate, workers, then, throttled_customer)
        return run.measure(service_seconds)


class _Drain:
    def __init__(
        self,
        services: Services,
        connection: str,
        messages: int,
        rate: float | None,
        workers: int,
        then: float | None,
        throttled_customer: bool,
    ) -> None:
        self.services, self.connection, self.messages = services, connection, messages
        self.rate, self.workers, self.then, self.throttled_customer = rate, workers, then, throttled_customer
        suffix = uuid.uuid4().hex[:8]
        self.names = {
            "PRODUCT_UPGRADE_REQUESTS_QUEUE": f"drain-requests-{suffix}",
            "PRODUCT_UPGRADE_RESULTS_QUEUE": f"drain-results-{suffix}",
        }
        self.customers = [str(uuid.uuid4()) for _ in range(messages)]
        if throttled_customer:
            self.customers[messages // 3] = THROTTLED_CUSTOMER

    def enqueue(self) -> None:
        from azure.storage.queue import QueueClient

        requests_queue = QueueClient.from_connection_string(
            self.connection, self.names["PRODUCT_UPGRADE_REQUESTS_QUEUE"]
        )
        requests_queue.create_queue()
        QueueClient.from_connection_string(self.connection, self.names["PRODUCT_UPGRADE_RESULTS_QUEUE"]).create_queue()
        send: Callable[[int], object] = lambda n: requests_queue.send_message(  # noqa: E731
            json.dumps({"customerId": self.customers[n], "correlationId": f"drain-{n}"})
        )
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(send, range(self.messages)))

    def measure(self, service_seconds: float) -> dict[str, Any]:
        self.enqueue()
        services = self.services
        services.command("reset")
        services.command("admit", rate=self.rate)
        services.command("service_time", seconds=service_seconds)
        if self.throttled_customer:
            services.command("throttle_customer", customer=THROTTLED_CUSTOMER, retry_after="30")
        table = _table()
        env = services.app_env(storage=self.connection, table=table)
        env.update(self.names)
        if self.rate is None:
            self.seed_pace(table)
        if self.throttled_customer:
            env["PRODUCT_UPGRADE_MAX_DEFERRALS"] = "2"  # its result within the run: after two deferrals of 30 s
        load = os.getloadavg()[0]
        figures, started = self._run_workers(env)
        return self._report(figures, started, load, service_seconds)

    def seed_pace(self, table: str) -> None:
        """With no limit at Partner Center, the harness's own pace is measured: the shared pace starts as if a
        high rate had been learnt already, so slow start from 10 calls/s does not count as the harness's."""
        import time as clock

        from shared.partner_center.pace_rules import Pace
        from shared.settings import StorageConnection
        from shared.store.pace_state import TablePaceState

        learnt = Pace(rate=1000.0, base=1000.0, slow_start=False, changed_at=clock.time())
        TablePaceState(StorageConnection(connection_string=self.connection), table).replace(learnt.to_record(), None)

    def _run_workers(self, env: dict[str, str]) -> tuple[list[dict[str, Any]], float]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.worker"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(self.workers)
        ]
        change: threading.Timer | None = None
        try:
            for proc in procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a drain worker did not start")
            self.services.command("mark")
            started = time.time()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            if self.then is not None and self.rate is not None:
                # Partner Center changes its mind half-way: at the time the first half of the messages would take.
                change = threading.Timer(
                    self.messages / 2 / self.rate, self.services.command, ("admit",), {"rate": self.then}
                )
                change.start()
            figures = []
            for proc in procs:
                out, _ = proc.communicate(timeout=1800)
                figures.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            if change is not None:
                change.cancel()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            self.services.command("admit", rate=None)
            self.services.command("service_time", seconds=0.0)
        return figures, started

    def _report(
        self, figures: list[dict[str, Any]], started: float, load: float, service_seconds: float
    ) -> dict[str, Any]:
        counts = self.services.counts()
        timed = [(r["at"], json.loads(r["message"])) for f in figures for r in f.pop("result_messages")]
        results = [result for _, result in timed]
        per_message = Counter(r["correlationId"] for r in results)
        statuses = Counter(r["status"] for r in results)
        held = {f"drain-{n}" for n, customer in enumerate(self.customers) if customer == THROTTLED_CUSTOMER}
        elapsed = max(at for at, _ in timed) - started
        # The campaign without its held customer: when every other message had its result.
        others = max((at for at, result in timed if result["correlationId"] not in held), default=started) - started
        ideal = ideal_seconds(self.messages, self.rate, self.then) if self.rate else None
        calls = counts["partner_center_calls"]
        settled_calls = counts["partner_center_calls_after_10s"]
        pace = [f.pop("pace") for f in figures]
        app = sum(f["app_seconds"] for f in figures)
        return {
            "messages": self.messages,
            "rate_per_second": self.rate,
            "rate_after_half_way": self.then,
            "throttled_customer": self.throttled_customer,
            "partner_center_service_seconds": service_seconds,
            "workers": self.workers,
            "load_average_at_start": round(load, 2),
            "drain_seconds": elapsed,
            "drain_seconds_without_held_customer": others,
            "held_customer_results": [result for result in results if result["correlationId"] in held],
            "ideal_seconds": ideal,
            "drain_ratio": elapsed / ideal if ideal else None,
            "messages_per_second": self.messages / elapsed,
            "partner_center_calls": calls,
            "throttled_calls": counts["partner_center_rate_limited"],
            "throttled_fraction": counts["partner_center_rate_limited"] / max(1, calls),
            "throttled_calls_after_10s": counts["partner_center_rate_limited_after_10s"],
            "calls_after_10s": settled_calls,
            "throttled_fraction_after_10s": counts["partner_center_rate_limited_after_10s"] / max(1, settled_calls),
            "customer_throttled_calls": counts["partner_center_customer_throttled"],
            # Each second since the start: [second, Partner Center calls, answered 429 by the partner's limit].
            "timeline": counts["partner_center_timeline"],
            "results": len(results),
            "statuses": dict(statuses),
            "messages_without_result": self.messages - len(per_message),
            "messages_with_two_results": sum(1 for n in per_message.values() if n > 1),
            "customers_upgraded": counts["distinct_customers_upgraded"],
            "duplicate_upgrades": counts["created_upgrades"] - counts["distinct_customers_upgraded"],
            "token_requests": counts["token_requests"],
            # Where the workers' time went: inside the queue function, or in the harness's queue calls.
            "app_seconds_per_message": app / max(1, sum(f["deliveries"] for f in figures)),
            "receive_seconds_per_call": sum(f["receive_seconds"] for f in figures)
            / max(1, sum(f["receives"] for f in figures)),
            "delete_seconds_per_message": sum(f["delete_seconds"] for f in figures)
            / max(1, sum(f["deliveries"] for f in figures)),
            "worker_cpu_seconds": sum(f["cpu_seconds"] for f in figures),
            "pace_storage_requests_per_second": sum(p.get("storage_requests", 0) for p in pace) / max(elapsed, 1e-9),
            "pace": pace,
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
