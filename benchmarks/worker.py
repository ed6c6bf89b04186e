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
    loop = QueueLoop(functions, requests_queue, settings)

    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    went, cpu = time.monotonic(), time.process_time()
    loop.drain()
    figures = loop.figures
    figures["wall_seconds"] = time.monotonic() - went
    figures["cpu_seconds"] = time.process_time() - cpu
    figures["pace"] = _pace_figures()
    figures["result_messages"] = loop.results
    print(json.dumps(figures), flush=True)
    return 0


class QueueLoop:
    """The host's queue loop over the requests queue, and the figures it keeps of where the time went."""

    def __init__(self, functions: Any, requests_queue: Any, settings: dict[str, Any]) -> None:
        self.functions = functions
        self.requests_queue = requests_queue
        self.settings = settings
        self.figures: dict[str, Any] = {
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
        self.results: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._running = threading.Semaphore(0)
        self._in_flight = 0

    def deliver(self, message: Any) -> None:
        """Run the queue function on one message; delete it if it returned, let it come back if it raised."""
        figures = self.figures
        try:
            started = time.monotonic()
            try:
                result = self.functions.queue(
                    message.content, message_id=message.id, dequeue_count=message.dequeue_count
                )
            except Exception:
                with self._lock:
                    figures["raised"] += 1
                    figures["app_seconds"] += time.monotonic() - started
                self.requests_queue.update_message(
                    message.id, message.pop_receipt, visibility_timeout=self.settings["visibility_timeout"]
                )
                return
            deleting = time.monotonic()
            self.requests_queue.delete_message(message.id, message.pop_receipt)
            with self._lock:
                figures["app_seconds"] += deleting - started
                figures["delete_seconds"] += time.monotonic() - deleting
                if result is None:
                    figures["no_result"] += 1
                else:
                    figures["results"] += 1
                    self.results.append({"at": time.time(), "message": result})
                figures["last_result_at"] = time.time()
        finally:
            with self._lock:
                self._in_flight -= 1
            self._running.release()

    def drain(self) -> None:
        """Fetch and run batches until the queue has been empty, with nothing running, for a second."""
        settings = self.settings
        idle_since: float | None = None
        with ThreadPoolExecutor(settings["batch_size"] + settings["new_batch_threshold"]) as pool:
            while True:
                with self._lock:
                    busy = self._in_flight
                if busy > settings["new_batch_threshold"]:
                    self._running.acquire(timeout=0.5)
                    continue
                batch = self._receive()
                if batch:
                    idle_since = None
                    with self._lock:
                        self._in_flight += len(batch)
                        self.figures["deliveries"] += len(batch)
                    for message in batch:
                        pool.submit(self.deliver, message)
                    continue
                if busy == 0 and self.requests_queue.get_queue_properties().approximate_message_count == 0:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 1.0:
                        break
                time.sleep(0.1)

    def _receive(self) -> list[Any]:
        """One fetch of up to a batch, its time counted as the harness's."""
        receiving = time.monotonic()
        batch = list(
            self.requests_queue.receive_messages(max_messages=self.settings["batch_size"], visibility_timeout=600)
        )
        self.figures["receive_seconds"] += time.monotonic() - receiving
        self.figures["receives"] += 1
        return batch


def _pace_figures() -> dict[str, Any]:
    from shared.upgrades.runtime import get_runtime

    return get_runtime().pace.figures()


if __name__ == "__main__":
    raise SystemExit(main())
