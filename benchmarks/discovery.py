"""``python -m benchmarks.discovery [--quick] [--rounds N]``: the pace of ``discover`` against the sandbox.

Three set-ups, in interleaved rounds, each a fresh ``python -m shared.cli discover`` (the real entry point, a
process of its own) against the sandbox's population (no failing calls: the steady pace):

- ``instant``: the sandbox answers at once; the ceiling of this machine and of the client.
- ``latency``: every call takes ``--service-seconds`` (0.25 s) at the sandbox, as a remote service does; the pace
  is then ``--concurrency`` (8) calls in flight over the latency: ideally 32 calls/s.
- ``limited``: as ``latency``, and the sandbox admits ``--admit`` (10) calls/s in all, answering 429 with
  ``Retry-After`` beyond it, as Partner Center throttles; the pace is then the limit's, if the client keeps to it.

The pace is counted at the sandbox: subscriptions calls (and customers) over the seconds between the first and
the last call; a throttled call is asked again, so customers per second is what a partner waits by.
Every round also checks the facts: each customer's subscriptions asked once (429s aside), every customer written.
Prints one JSON document; ``--output FILE`` writes it too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.services import ROOT
from sandbox.cli import running_sandbox
from sandbox.partner_center import FakePartnerCenter
from sandbox.population import Population

#: Achieved pace over the ideal one, at least (the floor of each set-up with an ideal).
FLOOR = 0.8


def _run(partner_center: FakePartnerCenter, env: dict[str, str], customers: int, workdir: Path) -> dict[str, Any]:
    partner_center.reset()
    population = Population.build(customers, failing=False)
    population.install(partner_center)
    output = workdir / f"candidates-{time.monotonic_ns()}.csv"
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "shared.cli", "discover", "--output", str(output), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.monotonic() - started
    if ran.returncode != 0:
        raise RuntimeError(f"discover failed ({ran.returncode}):\n{ran.stderr[-4000:]}")
    document = json.loads(ran.stdout)
    reads = [r for r in partner_center.requests if r.path.lower().endswith("/subscriptions")]
    answered = [r.received_at for r in reads]
    span = max(answered) - min(answered)
    per_customer = {r.path.lower() for r in reads}
    return {
        "customers": customers,
        "subscriptions_calls": len(reads),
        "throttled_calls": document["throttled"],
        "calls_per_second": (len(reads) - 1) / span if span > 0 else None,
        # Throttled calls are asked again: customers read per second is the figure a partner waits by.
        "customers_per_second": customers / span if span > 0 else None,
        "wall_seconds": wall,
        "every_customer_asked": len(per_customer) == customers,
        "kept_as_population": document["counts"]["kept"] == len(population.kept),
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.discovery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: proves it runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--service-seconds", type=float, default=0.25)
    parser.add_argument("--admit", type=float, default=10.0, help="calls per second the limited sandbox admits")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    setups = {  # name: (customers, seconds a call, calls admitted per second)
        "instant": (100 if args.quick else 2000, 0.0, None),
        "latency": (60 if args.quick else 1000, args.service_seconds, None),
        "limited": (40 if args.quick else 600, args.service_seconds, args.admit),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    with (
        tempfile.TemporaryDirectory(prefix="bench-discovery-") as work,
        running_sandbox(Path(work), entra_port=0, partner_center_port=0, customers=0) as sandbox,
    ):
        env = {**os.environ, **sandbox.settings(), "PYTHONPATH": str(ROOT)}
        for number in range(rounds):
            for name, (customers, seconds, admit) in setups.items():
                print(f"== round {number + 1}: {name} ({customers} customers) ...", file=sys.stderr, flush=True)
                sandbox.partner_center.service_time(seconds)
                sandbox.partner_center.admit_per_second(admit)
                runs[name].append(_run(sandbox.partner_center, env, customers, Path(work)))
    results: dict[str, Any] = {}
    for name, (customers, seconds, admit) in setups.items():
        paces = [run["calls_per_second"] for run in runs[name] if run["calls_per_second"]]
        ideal = admit if admit else (8 / seconds if seconds else None)
        pace = _summary(paces)
        customers_pace = _summary([run["customers_per_second"] for run in runs[name] if run["customers_per_second"]])
        results[name] = {
            "customers": customers,
            "service_seconds": seconds,
            "admitted_per_second": admit,
            "ideal_calls_per_second": ideal,
            "calls_per_second": pace,
            "customers_per_second": customers_pace,
            "verdict": "-" if ideal is None else ("PASS" if pace["median"] >= FLOOR * ideal else "MISS"),
            "seconds_for_10000_customers": 10_000 / customers_pace["median"],
            "runs": runs[name],
        }
    document = {"command": "python -m benchmarks.discovery" + (" --quick" if args.quick else ""), "results": results}
    text = json.dumps(document, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    facts = [run["every_customer_asked"] and run["kept_as_population"] for r in runs.values() for run in r]
    return 0 if all(facts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
