"""Warm overhead, in an app process of its own: CPU per create through our functions against the floors.

Floor 1: a bare ``requests.Session().post`` of the same create to the same fake (what any implementation
must do). Floor 2 (storage on): floor 1 plus the same storage calls made directly with the Azure SDK clients,
so what is left is our own work around the SDKs. Run by ``python -m benchmarks``; prints one JSON document.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks import floors
from benchmarks.app import Functions, HostLikeHandler, host_logging, interleaved, new_customer, ratio_summary

#: Functions whose calls mean "the environment was read again for this call" (requests' merge of proxies,
#: NO_PROXY and .netrc).
ENVIRONMENT_SCANS = ("get_environ_proxies", "getproxies_environment", "get_netrc_auth")


def environment_scans(op: Callable[[], object], n: int) -> float:
    """Calls of :data:`ENVIRONMENT_SCANS` per call of ``op``, counted by the profiler (no patching)."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        op()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls = sum(value[1] for (_, _, name), value in stats.items() if name in ENVIRONMENT_SCANS)
    return float(calls) / n


def warm_pace(functions: Functions, *, limit_seconds: float = 20.0) -> None:
    """Creates until the pace has learned its rate: a warm instance has, and its slow start (10 calls a second,
    doubling each second calls wait) would hold the first rounds' calls back, at a cost no later call pays."""
    import time

    from shared.upgrades import runtime

    pace = runtime.get_runtime().pace
    started = time.monotonic()
    while pace.rate < pace.rules.maximum and time.monotonic() - started < limit_seconds:
        functions.create_http(new_customer())


def run(config: dict[str, Any]) -> dict[str, Any]:
    """The warm figures for ``config`` (rounds, per_round): CPU against the floors, then counts per create."""
    handler = host_logging()
    functions = Functions()
    storage = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 - the host's own name
    rounds, per_round = int(config["rounds"]), int(config["per_round"])

    floor = _warm_up(functions, os.environ["PARTNER_CENTER_BASE_URL"], storage)
    ops = _operations(functions, floor, storage, checks_needed=rounds * per_round + 2)
    samples = interleaved(ops, rounds=rounds, per_round=per_round)
    result = _ratios(samples, storage=bool(storage))
    result.update(_per_create(handler, ops["app_http"], floor, per_round))
    return result


def _warm_up(functions: Functions, base_url: str, storage: str | None) -> floors.Floor:
    """Warm the app (token, connections, table, pace) and its floor alike; the floor, with the app's token."""
    from shared.upgrades import runtime

    functions.create_http(new_customer())  # warm: token, connections, table
    functions.queue({"customerId": new_customer()})
    warm_pace(functions)
    token = runtime.get_runtime().tokens.get_token()
    floor = floors.Floor(base_url, token, storage)
    floor.post(new_customer())
    if storage:
        floor.with_storage(new_customer(), keyed=False)
    return floor


def _operations(
    functions: Functions, floor: floors.Floor, storage: str | None, *, checks_needed: int
) -> dict[str, Callable[[], object]]:
    """What the rounds measure, by name: the app's calls and their floors (storage ones only with storage)."""

    def app_http() -> None:
        functions.create_http(new_customer())

    def app_http_keyed() -> None:
        functions.create_http(new_customer(), idempotency_key=str(uuid.uuid4()))

    def app_queue() -> None:
        functions.queue({"customerId": new_customer(), "requestId": str(uuid.uuid4())})

    app_checks, floor_checks = _tracking_checks(functions, floor, checks_needed) if storage else ([], [])
    ops: dict[str, Callable[[], object]] = {
        "app_http": app_http,
        "app_queue": app_queue,
        "floor_post": lambda: floor.post(new_customer()),
    }
    if storage:
        ops["app_http_keyed"] = app_http_keyed
        ops["floor_storage"] = lambda: floor.with_storage(new_customer(), keyed=False)
        ops["floor_storage_keyed"] = lambda: floor.with_storage(new_customer(), keyed=True)
        ops["app_tracking"] = lambda: functions.track(app_checks.pop())
        ops["floor_tracking"] = lambda: floor.tracking_check(*floor_checks.pop())
    return ops


def _tracking_checks(
    functions: Functions, floor: floors.Floor, count: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Tracking checks for the app and its floor: upgrades created beforehand (keyed, so their ledger key is
    known), one check each; the first of each is run here, to warm the tracking path."""
    from shared.ids import request_id_for
    from shared.upgrades.checks import TrackingCheck

    app_checks: list[dict[str, Any]] = []
    floor_checks: list[tuple[str, str]] = []
    for _ in range(count):
        customer, key = new_customer(), str(uuid.uuid4())
        created = json.loads(functions.create_http(customer, idempotency_key=key).get_body())
        app_checks.append(
            TrackingCheck(created["upgradeId"], customer, "Azure", request_id_for("idempotency-key", key), 1).to_json()
        )
        other = new_customer()  # one running upgrade per customer at Partner Center
        floor_checks.append((floor.with_storage(other, keyed=False)[0], other))
    functions.track(app_checks.pop())
    floor.tracking_check(*floor_checks.pop())
    return app_checks, floor_checks


def _ratios(samples: dict[str, Any], *, storage: bool) -> dict[str, Any]:
    """CPU of each app call against its floor (with storage: the floor making the same storage calls)."""
    result: dict[str, Any] = {"storage": storage}
    floor_name = "floor_storage" if storage else "floor_post"
    result["http"] = ratio_summary(samples["app_http"], samples[floor_name])
    result["queue"] = ratio_summary(samples["app_queue"], samples["floor_storage_keyed" if storage else "floor_post"])
    if storage:
        result["http_keyed"] = ratio_summary(samples["app_http_keyed"], samples["floor_storage_keyed"])
        result["floor_storage_vs_post"] = ratio_summary(samples["floor_storage"], samples["floor_post"])
        result["tracking"] = ratio_summary(samples["app_tracking"], samples["floor_tracking"])
    result["http_vs_bare_post"] = ratio_summary(samples["app_http"], samples["floor_post"])
    return result


def _per_create(
    handler: HostLikeHandler, app_http: Callable[[], object], floor: floors.Floor, n: int
) -> dict[str, float]:
    """Log records and environment scans per create, over ``n`` more creates."""
    records_before, sdk_before = handler.records, handler.sdk_records
    for _ in range(n):
        app_http()
    return {
        "log_records_per_create": (handler.records - records_before) / n,
        "sdk_log_records_per_create": (handler.sdk_records - sdk_before) / n,
        "environment_scans_per_create": environment_scans(app_http, n),
        "environment_scans_per_bare_post": environment_scans(lambda: floor.post(new_customer()), n),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
