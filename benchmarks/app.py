"""Inside an app process: the functions called the way the host calls them, logging as the host sets it up,
and the measuring helpers (CPU per operation, interleaved rounds, median and spread)."""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

#: Log records from these loggers count as "SDK log records" (they cost CPU and App Insights ingestion).
SDK_LOGGER_PREFIXES = ("azure.", "msal", "urllib3")


class HostLikeHandler(logging.Handler):
    """What the Functions worker does with a record: format it and ship it (here: count it, drop it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.records = 0
        self.sdk_records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        self.records += 1
        if record.name.startswith(SDK_LOGGER_PREFIXES):
            self.sdk_records += 1


def host_logging() -> HostLikeHandler:
    """The root logger at INFO with one handler, as the Python worker runs user code."""
    handler = HostLikeHandler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


class Functions:
    """The indexed functions of ``function_app``, called with real ``HttpRequest``/``QueueMessage`` objects."""

    def __init__(self) -> None:
        import function_app

        self.by_name = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}

    def create_http(self, customer_id: str, idempotency_key: str | None = None) -> Any:
        import azure.functions as func

        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        req = func.HttpRequest(
            "POST",
            "https://upgrades.example.net/api/productupgrades",
            headers=headers,
            params={},
            route_params={},
            body=json.dumps({"customerId": customer_id}).encode(),
        )
        response = self.by_name["create_product_upgrade"](req)
        if response.status_code != 202:
            raise RuntimeError(f"create answered {response.status_code}: {response.get_body()[:300]!r}")
        return response

    def queue(self, body: dict[str, Any] | str, *, message_id: str | None = None, dequeue_count: int = 1) -> str | None:
        """Run the queue function; the result message it set (None when it set none)."""
        from azure.functions.queue import QueueMessage

        raw = body if isinstance(body, str) else json.dumps(body)
        msg = QueueMessage(
            id=message_id or str(uuid.uuid4()), body=raw.encode(), dequeue_count=dequeue_count, pop_receipt="pr"
        )
        out = Out()
        self.by_name["product_upgrade_from_queue"](msg, out)
        return out.value

    def track(self, check: dict[str, Any]) -> None:
        """Run the tracking function on one scheduled status check."""
        from azure.functions.queue import QueueMessage

        msg = QueueMessage(id=str(uuid.uuid4()), body=json.dumps(check).encode(), dequeue_count=1, pop_receipt="pr")
        self.by_name["track_product_upgrade"](msg)


class Out:
    """A queue output binding as the host gives it."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str | None:
        return self.value


def new_customer() -> str:
    return str(uuid.uuid4())


def cpu_per_op(op: Callable[[], object], n: int) -> float:
    """CPU seconds of this process per call of ``op`` (every thread counted)."""
    started = time.process_time()
    for _ in range(n):
        op()
    return (time.process_time() - started) / n


def interleaved(ops: dict[str, Callable[[], object]], *, rounds: int, per_round: int) -> dict[str, list[float]]:
    """CPU per op for each of ``ops``, measured in ``rounds`` rounds; each round runs every op ``per_round``
    times, in a shuffled order, so drift (caches, the fakes' load, the machine) touches every op alike."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    order = list(ops)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            samples[name].append(cpu_per_op(ops[name], per_round))
    return samples


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Per-round ratios: median, and the spread as the lowest and highest round."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return {
        "median": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
        "rounds": len(ratios),
        "numerator_ms": statistics.median(numerator) * 1000,
        "denominator_ms": statistics.median(denominator) * 1000,
    }
