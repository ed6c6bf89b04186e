"""One worker process of the campaign drain: the Functions host's queue loop around our queue function.

As the host does with host.json's ``queues`` settings: fetch up to ``batchSize`` messages, run them side by
side, fetch again when no more than ``newBatchThreshold`` are still running; a message whose function
returned is deleted; a function that raised leaves its message to come back after ``visibilityTimeout``.
Started by ``python -m benchmarks`` (drain section); waits for ``go`` on stdin, then drains the requests
queue and prints one JSON line with its figures and the result messages. The figures split the worker's time:
inside our queue function (``app_seconds``: the app, Partner Center's pace included) and in the harness's own
queue calls (``receive_seconds``, ``delete_seconds``: Azurite), so a slow drain says which one set its pace; and
the pace limiter's own figures (rate, share, 429s by kind, exchanges with the shared pace and their storage
requests).

The result messages are reported on stdout instead of being written to a results queue: writing them is
the host's output binding, not our code, and on a shared two-core machine Azurite's queue service is the
scarcest resource of the harness (see the drain's "capacity" figure).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def host_queue_settings() -> dict[str, Any]:
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    hours, minutes, seconds = (int(part) for part in queues["visibilityTimeout"].split(":"))
    return {
        "batch_size": int(queues["batchSize"]),
        "new_batch_threshold": int(queues["newBatchThreshold"]),
        "visibility_timeout": hours * 3600 + minutes * 60 + seconds,
    }


def main() -> int:
    from azure.storage.queue import QueueClient

    from benchmarks.app import Functions, host_logging

    settings = host_queue_settings()
    host_logging()
    functions = Functions()
    connection = os.environ["AzureWebJobsStorage"]  # noqa: SIM112 - the host's own name
    requests_queue = QueueClient.from_connection_string(connection, os.environ["PRODUCT_UPGRADE_REQUESTS_QUEUE"])
    figures: dict[str, Any] = {
        "deliveries": 0,
        "raised": 0,
        "results": 0,
        "no_result": 0,
        "last_result_at": 0.0,
        "app_seconds": 0.0,
        "receive_seconds": 0.0,
        "receives": 0,
        "delete_seconds": 0.0,
    }
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    running = threading.Semaphore(0)
    in_flight = [0]

    def deliver(message: Any) -> None:
        try:
            started = time.monotonic()
            try:
                result = functions.queue(message.content, message_id=message.id, dequeue_count=message.dequeue_count)
            except Exception:
                with lock:
                    figures["raised"] += 1
                    figures["app_seconds"] += time.monotonic() - started
                requests_queue.update_message(
                    message.id, message.pop_receipt, visibility_timeout=settings["visibility_timeout"]
                )
                return
            deleting = time.monotonic()
            requests_queue.delete_message(message.id, message.pop_receipt)
            with lock:
                figures["app_seconds"] += deleting - started
                figures["delete_seconds"] += time.monotonic() - deleting
                if result is None:
                    figures["no_result"] += 1
                else:
                    figures["results"] += 1
                    results.append({"at": time.time(), "message": result})
                figures["last_result_at"] = time.time()
        finally:
            with lock:
                in_flight[0] -= 1
            running.release()

    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    went, cpu = time.monotonic(), time.process_time()
    idle_since: float | None = None
    with ThreadPoolExecutor(settings["batch_size"] + settings["new_batch_threshold"]) as pool:
        while True:
            with lock:
                busy = in_flight[0]
            if busy > settings["new_batch_threshold"]:
                running.acquire(timeout=0.5)
                continue
            receiving = time.monotonic()
            batch = list(requests_queue.receive_messages(max_messages=settings["batch_size"], visibility_timeout=600))
            figures["receive_seconds"] += time.monotonic() - receiving
            figures["receives"] += 1
            if batch:
                idle_since = None
                with lock:
                    in_flight[0] += len(batch)
                    figures["deliveries"] += len(batch)
                for message in batch:
                    pool.submit(deliver, message)
                continue
            if busy == 0 and requests_queue.get_queue_properties().approximate_message_count == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 1.0:
                    break
            time.sleep(0.1)
    figures["wall_seconds"] = time.monotonic() - went
    figures["cpu_seconds"] = time.process_time() - cpu
    figures["pace"] = _pace_figures()
    figures["result_messages"] = results
    print(json.dumps(figures), flush=True)
    return 0


def _pace_figures() -> dict[str, Any]:
    from shared.upgrades.runtime import get_runtime

    return get_runtime().pace.figures()


if __name__ == "__main__":
    raise SystemExit(main())
