"""Targets: each figure against its target, PASS or MISS; the table; the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def machine() -> dict[str, Any]:
    memory_kib = 0
    try:
        with open("/proc/meminfo") as meminfo:
            memory_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line for line in cpuinfo if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def _row(section: str, figure: str, value: float, target: float, shown: str, *, at_most: bool = True) -> dict[str, Any]:
    passed = value <= target if at_most else value >= target
    return {
        "section": section,
        "figure": figure,
        "value": value,
        "shown": shown,
        "target": ("<= " if at_most else ">= ") + f"{target:g}",
        "verdict": "PASS" if passed else "MISS",
    }


def _ratio(summary: dict[str, float]) -> str:
    return f"{summary['median']:.2f}x ({summary['min']:.2f}-{summary['max']:.2f}, n={summary['rounds']})"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of ``results`` against its target, section by section; a section not run gives no row."""
    rows = _warm_rows(results.get("warm"))
    rows += _outbound_call_rows(results.get("calls_and_memory"))
    rows += _memory_rows(results.get("calls_and_memory"))
    rows += _cold_start_rows(results.get("cold_start"))
    rows += drain_targets(results.get("drain") or {})
    rows += _campaign_rows(results.get("campaign_summary"))
    return rows


def _warm_rows(warm: dict[str, Any] | None) -> list[dict[str, Any]]:
    """CPU per call against its floor, then the log records and environment scans each create costs."""
    if not warm:
        return []
    rows: list[dict[str, Any]] = []
    plain, stored = warm["without_storage"], warm["with_storage"]
    # Without storage there is no tracking (the tracker needs the ledger and the queues).
    for data, section, floor, limit in (
        (plain, "warm, no storage", "bare POST", 1.15),
        (stored, "warm, storage", "bare POST + same SDK storage calls", 1.2),
    ):
        for path in ("http", "http_keyed", "queue", "tracking"):
            if path in data:
                summary = data[path]
                rows.append(_row(section, f"{path}: CPU vs {floor}", summary["median"], limit, _ratio(summary)))
    for name, data in (("no storage", plain), ("storage", stored)):
        rows.append(
            _row(
                f"warm, {name}",
                "Azure SDK log records per create at INFO",
                data["sdk_log_records_per_create"],
                0,
                f"{data['sdk_log_records_per_create']:.2f}",
            )
        )
        rows.append(
            _row(
                f"warm, {name}",
                "environment scans per create",
                data["environment_scans_per_create"],
                0,
                f"{data['environment_scans_per_create']:.2f} "
                f"(bare POST: {data['environment_scans_per_bare_post']:.2f})",
            )
        )
    return rows


def _outbound_call_rows(calls: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Token requests, secret reads, Partner Center POSTs and storage requests of the calls section."""
    if not calls:
        return []
    large = calls["n"][1]
    at = calls["calls_at_large_n"]
    rows = [
        _row("outbound calls", f"token requests at N={large}", at["token_requests"], 1, str(at["token_requests"])),
        _row(
            "outbound calls",
            f"Key Vault secret reads at N={large}",
            at["key_vault_reads"],
            3,
            str(at["key_vault_reads"]),
        ),
        _row(
            "outbound calls",
            f"Partner Center POSTs at N={large}",
            at["partner_center_calls"],
            large,
            f"{at['partner_center_calls']} (N={large})",
        ),
        _row(
            "outbound calls",
            "storage requests per create, no Idempotency-Key",
            calls["storage_requests_per_create"],
            2,
            f"{calls['storage_requests_per_create']:.2f}",
        ),
        _row(
            "outbound calls",
            "storage requests per create, Idempotency-Key",
            calls["storage_requests_per_keyed_create"],
            3,
            f"{calls['storage_requests_per_keyed_create']:.2f}",
        ),
    ]
    if "pace_storage_requests_at_large_n" in calls:
        rows.append(
            _figure(
                "outbound calls",
                f"shared pace: storage requests during the N={large} creates (counted apart from the above)",
                calls["pace_storage_requests_at_large_n"],
                str(calls["pace_storage_requests_at_large_n"]),
            )
        )
    return rows


def _memory_rows(calls: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The peak RSS growth from the calls section's small N to its large N."""
    if not calls:
        return []
    small, large = calls["n"]
    rss = calls["peak_rss_kib"]
    return [
        _row(
            "memory",
            f"peak RSS growth N={small} -> N={large}",
            calls["rss_growth_kib"],
            1024,
            f"{calls['rss_growth_kib']:.0f} KiB ({rss[str(small)] / 1024:.1f} -> {rss[str(large)] / 1024:.1f} MiB)",
        )
    ]


def _cold_start_rows(cold: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Import CPU against azure.functions alone, the secret reads in flight, and the first 202's wall time."""
    if not cold:
        return []
    ms = cold["import_cpu_ms"]
    wall = cold["first_202_wall_ms"]
    return [
        _row(
            "cold start",
            "import function_app + index vs import azure.functions (CPU)",
            cold["import_ratio"]["median"],
            1.5,
            f"{_ratio(cold['import_ratio'])}; {ms['function-app']:.0f} vs {ms['azure-functions']:.0f} ms",
        ),
        _row(
            "cold start",
            "Key Vault secret reads in flight at once (first 202)",
            cold["key_vault_reads_in_flight_at_once"],
            3,
            str(cold["key_vault_reads_in_flight_at_once"]),
            at_most=False,
        ),
        _figure(
            "cold start",
            "fresh process to first 202 vs the same calls made directly (wall)",
            cold["first_202_ratio"]["median"],
            f"{_ratio(cold['first_202_ratio'])}; {wall['first-202']:.0f} vs {wall['first-202-floor']:.0f} ms",
        ),
    ]


def _figure(section: str, figure: str, value: float, shown: str) -> dict[str, Any]:
    return {"section": section, "figure": figure, "value": value, "shown": shown, "target": "(figure)", "verdict": "-"}


def drain_targets(drains: dict[str, Any]) -> list[dict[str, Any]]:
    """The drain's targets. Drain time is held to 1.15x N/R only where the harness, with as many messages held
    and no limit at all, runs at least twice as fast as R: below that the harness, not the app, sets the pace."""
    runs = {label: run for label, run in drains.items() if isinstance(run, dict)}
    capacities = {run["messages"]: run for run in runs.values() if run["rate_per_second"] is None}
    rows: list[dict[str, Any]] = []
    for messages, capacity in sorted(capacities.items()):
        rows.append(
            _figure(
                f"drain, no limit, {messages} msgs held, {capacity['workers']} workers",
                "harness capacity (Azurite, fakes, workers on this machine)",
                capacity["messages_per_second"],
                f"{capacity['messages_per_second']:.1f} msgs/s; per message"
                f" {capacity['app_seconds_per_message'] * 1000:.0f} ms in the queue function,"
                f" {capacity['delete_seconds_per_message'] * 1000:.0f} ms deleting it;"
                f" {capacity['receive_seconds_per_call'] * 1000:.0f} ms per receive",
            )
        )
    baseline = runs.get("R=20")
    for run in runs.values():
        if run["rate_per_second"] is None:
            continue
        rows += _drain_rows(run, capacities.get(run["messages"]), baseline)
    return rows


def _drain_section(run: dict[str, Any]) -> str:
    """The section's name: the rate (and how it changed), the messages held, the workers."""
    rate = f"R={run['rate_per_second']:g}/s"
    if run.get("rate_after_half_way"):
        rate += f" then {run['rate_after_half_way']:g}/s"
    if run.get("throttled_customer"):
        rate += ", one customer always throttled"
    return f"drain {rate}, {run['messages']} msgs, {run['workers']} workers"


def _drain_time_row(section: str, run: dict[str, Any], capacity: dict[str, Any] | None) -> dict[str, Any]:
    """Drain time against N/R: a target only where the harness runs at least twice as fast as the top rate."""
    top = max(run["rate_per_second"], run.get("rate_after_half_way") or 0)
    harness = capacity["messages_per_second"] if capacity else None
    shown = f"{run['drain_ratio']:.2f}x ({run['drain_seconds']:.1f} s vs {run['ideal_seconds']:.0f} s)"
    if harness is not None and harness >= 2 * top:
        return _row(section, "drain time vs ideal", run["drain_ratio"], 1.15, shown + f"; harness {harness:.0f}/s")
    why = f"harness {harness:.0f} msgs/s < 2R: the harness sets the pace" if harness else "no harness figure"
    return _figure(section, "drain time vs ideal", run["drain_ratio"], f"{shown}; {why}")


def _drain_rows(
    run: dict[str, Any], capacity: dict[str, Any] | None, baseline: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """One limited drain run's rows; ``baseline`` (R=20) is what the held customer's run is measured against."""
    section = _drain_section(run)
    rows = [_drain_time_row(section, run, capacity)]
    rows.append(
        _row(
            section,
            "throttled calls / all calls, after the first 10 s",
            run["throttled_fraction_after_10s"],
            0.03,
            f"{run['throttled_fraction_after_10s']:.1%}"
            f" ({run['throttled_calls_after_10s']} of {run['calls_after_10s']});"
            f" in all {run['throttled_fraction']:.1%} ({run['throttled_calls']} of {run['partner_center_calls']})",
        )
    )
    lost = run["messages_without_result"]
    doubled = run["messages_with_two_results"] + run["duplicate_upgrades"]
    rows.append(_row(section, "messages lost / doubled", lost + doubled, 0, f"{lost} / {doubled}"))
    rows.append(
        _row(
            section,
            "token requests (one per process)",
            run["token_requests"],
            run["workers"],
            str(run["token_requests"]),
        )
    )
    if run.get("throttled_customer") and baseline:
        ratio = run["drain_seconds_without_held_customer"] / baseline["drain_seconds"]
        rows.append(
            _row(
                section,
                "drain time vs the same run without the held customer",
                ratio,
                1.15,
                f"{ratio:.2f}x ({run['drain_seconds_without_held_customer']:.1f} s"
                f" vs {baseline['drain_seconds']:.1f} s; {run['customer_throttled_calls']} calls for it throttled)",
            )
        )
    rows.append(
        _figure(
            section,
            "shared pace: storage requests per second, all workers",
            run["pace_storage_requests_per_second"],
            f"{run['pace_storage_requests_per_second']:.1f}",
        )
    )
    return rows


def _campaign_rows(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not run:
        return []
    section = f"campaign summary, {run['upgrades']:,} upgrades"
    ms, floor = run["summary_ms"], run["floor_ms"]
    mismatches = run["state_mismatches"] + (not run["histogram_equal_scan"]) + (not run["times_equal_scan"])
    return [
        _row(
            section,
            "storage requests per summary",
            run["storage_requests_per_summary"],
            1,
            f"{run['storage_requests_per_summary']:.2f}",
        ),
        _row(
            section,
            "milliseconds per summary (median of interleaved rounds)",
            ms["median"],
            100,
            f"{ms['median']:.1f} ms ({ms['min']:.1f}-{ms['max']:.1f}, n={ms['rounds']}); "
            f"bare query {floor['median']:.1f} ms",
        ),
        _row(
            section,
            "summary vs the same query made bare",
            run["summary_vs_floor"]["median"],
            1.5,
            _ratio(run["summary_vs_floor"]),
        ),
        _row(
            section,
            "counts vs a full scan of the records: differences",
            mismatches,
            0,
            f"{mismatches} ({run['records_scanned']:,} records scanned in {run['full_scan_ms'] / 1000:.1f} s)",
        ),
        {
            "section": section,
            "figure": "storage requests per upgrade recorded (accepted, ended, marked sent; counts included)",
            "value": run["storage_requests_per_upgrade_recorded"],
            "shown": f"{run['storage_requests_per_upgrade_recorded']:.2f}",
            "target": "(figure)",
            "verdict": "-",
        },
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = ("section", "figure", "measured", "target", "")
    table = [(r["section"], r["figure"], r["shown"], r["target"], r["verdict"]) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *table, strict=False)]
    line = "  ".join("{:<" + str(w) + "}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in table:
        print(line.format(*row))
