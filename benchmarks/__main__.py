"""``python -m benchmarks [--quick] [--only SECTION ...]``: every figure of the performance targets, measured
side by side in one run, printed as a table with PASS/MISS per target and written to benchmarks/results.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import sections
from benchmarks.report import machine, print_table, targets
from benchmarks.services import ROOT, Services

RESULTS = ROOT / "benchmarks" / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves every section runs (CI)")
    parser.add_argument("--only", nargs="*", choices=sorted(sections.ALL), help="run only these sections")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    chosen = args.only or list(sections.ALL)
    results: dict[str, Any] = {}
    if args.only and args.output.exists():  # a partial run updates the sections it ran
        previous = json.loads(args.output.read_text())
        if previous.get("quick") == args.quick:
            results = previous["results"]
    started = time.monotonic()
    document: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir, Services(Path(workdir)) as services:
        for name in chosen:
            print(f"== {name} ...", file=sys.stderr, flush=True)
            section_started = time.monotonic()
            load_before = os.getloadavg()[0]
            results[name] = sections.ALL[name](services, quick=args.quick)
            # Other work on the machine shows here: wall-clock figures (cold start, drain) suffer from it.
            results[name]["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            print(f"   {time.monotonic() - section_started:.1f} s", file=sys.stderr, flush=True)
            document = {
                "command": "python -m benchmarks" + (" --quick" if args.quick else ""),
                "quick": args.quick,
                "machine": machine(),
                "seconds": round(time.monotonic() - started, 1),
                "targets": targets(results),
                "results": results,
            }
            args.output.write_text(json.dumps(document, indent=2) + "\n")  # after every section
    rows = document["targets"]
    print_table(rows)
    loads = ", ".join(f"{name} {r['load_average'][0]}-{r['load_average'][1]}" for name, r in results.items())
    print(f"\nmachine: {document['machine']}; load average (1 min) around each section: {loads}")
    print(f"\n{len(rows)} figures, {sum(r['verdict'] == 'MISS' for r in rows)} MISS; written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
