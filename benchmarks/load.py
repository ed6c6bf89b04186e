"""N creates in a fresh app process (``python -m benchmarks.load N [--keyed]``): prints its peak RSS.

The outbound calls these creates made are counted by the fakes process and the storage proxy, not here.
"""

from __future__ import annotations

import argparse
import json
import resource
import uuid

from benchmarks.app import Functions, host_logging, new_customer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int)
    parser.add_argument("--keyed", action="store_true", help="send an Idempotency-Key with every create")
    args = parser.parse_args()
    host_logging()
    functions = Functions()
    for _ in range(args.n):
        functions.create_http(new_customer(), idempotency_key=str(uuid.uuid4()) if args.keyed else None)
    from shared.upgrades.runtime import get_runtime

    # The pace's exchanges with its shared state are storage requests too, made per second, not per create.
    pace = get_runtime().pace.figures().get("storage_requests", 0)
    print(json.dumps({"n": args.n, "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "pace": pace}))


if __name__ == "__main__":
    main()
