"""Rows worked ``--concurrency`` at a time, and waited on in rounds: the one loop every campaign step uses.

Sending, following the ledger and polling for outcomes are all "a task per row, in a thread pool, until each
row has a result"; a stop flag (Ctrl-C, SIGTERM, or settings failing mid-run) drops rows not yet started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from threading import Event, Lock

from shared.errors import CredentialError, PartnerCenterError, ProductUpgradeError, SettingError

from .campaign import Result, Row
from .diagnosis import unreachable

#: Seconds the main thread waits for a worker before it looks at the stop flag again.
_TICK = 0.2

#: Worker threads' name prefix: the command line's exit leaves threads of an abandoned pool behind, by name.
WORKER_PREFIX = "bulk"

#: What a row abandoned in flight says in the report: neither sent for sure nor known to have failed.
IN_FLIGHT = (
    "stopped while in flight: Partner Center may or may not have taken it; the next run asks again with the "
    "same MS-RequestId, which Partner Center answers with the same upgrade"
)

#: One row's task: its result, or None for "nothing to report yet" (or not started because of a stop).
Task = Callable[[Row], Result | None]
Done = Callable[[Row, Result], None]


class Fatal(Exception):
    """Every other row would fail the same way: stop the campaign, the operator must act (exit 3 or 4)."""

    def __init__(self, error: ProductUpgradeError) -> None:
        super().__init__(error.message)
        self.error = error


def stops_the_run(exc: ProductUpgradeError) -> bool:
    """Settings, our own credentials, or a service not reached at all: not about one row."""
    return (
        isinstance(exc, SettingError | CredentialError)
        or (isinstance(exc, PartnerCenterError) and exc.token_rejected)
        or unreachable(exc)
    )


class RowPool:
    """``stop``: start no more rows, let the ones in flight finish. ``abandon``: stop waiting for them too."""

    def __init__(self, concurrency: int, stop: Event, abandon: Event | None = None) -> None:
        self.concurrency = concurrency
        self.stop = stop
        self.abandon = abandon or Event()
        self._in_flight: set[int] = set()
        self._lock = Lock()

    @property
    def in_flight(self) -> int:
        """Rows whose task has started and not yet finished."""
        with self._lock:
            return len(self._in_flight)

    def run(self, rows: list[Row], task: Task, done: Done, *, abandoned: Done | None = None) -> None:
        """``task`` for each row; ``done`` in this thread as each finishes with a result.

        When ``stop`` is set, rows not started are dropped and the ones in flight finish. When ``abandon`` is
        set, the rows still in flight go to ``abandoned`` (when given) and this returns at once: their threads
        are left to end on their own. A task raising :class:`Fatal` sets ``stop`` at once, and the first such
        error is raised once the pool has drained.
        """
        fatal: Fatal | None = None

        def guarded(row: Row) -> Result | None:
            with self._lock:
                self._in_flight.add(row.number)
            try:
                return task(row)
            except Fatal:
                self.stop.set()  # at once: no worker starts another row
                raise
            finally:
                with self._lock:
                    self._in_flight.discard(row.number)

        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=WORKER_PREFIX)
        pending: dict[Future[Result | None], Row] = {pool.submit(guarded, row): row for row in rows}
        try:
            while pending and not self.abandon.is_set():
                finished, _ = wait(pending, timeout=_TICK, return_when=FIRST_COMPLETED)
                for future in finished:
                    row = pending.pop(future)
                    try:
                        result = future.result()
                    except Fatal as exc:
                        fatal = fatal or exc
                        continue
                    if result is not None:
                        done(row, result)
                if self.stop.is_set():
                    for future in list(pending):
                        if future.cancel():
                            del pending[future]
        finally:
            pool.shutdown(wait=not self.abandon.is_set(), cancel_futures=True)
        for future, row in pending.items():  # left behind by abandon: the ones still running have no answer
            if not future.done() and abandoned is not None:
                abandoned(row, Result("failed", error_code="unknown", message=IN_FLIGHT))
            elif future.done() and not future.cancelled() and future.exception() is None:
                result = future.result()
                if result is not None:
                    done(row, result)
        if fatal is not None:
            raise fatal

    def poll(self, waiting: Mapping[int, Row], check: Task, done: Done, interval: float) -> None:
        """Round after round, ``check`` each waiting row until each has a result (or ``stop``).

        A round starts at most every ``interval`` seconds; ``done`` gets each row's result once, and the row
        leaves the rounds.
        """
        left = dict(waiting)

        def settled(row: Row, result: Result) -> None:
            left.pop(row.number, None)
            done(row, result)

        while left and not self.stop.is_set():
            started = time.monotonic()
            self.run(list(left.values()), check, settled)
            if left:
                self.stop.wait(max(0.0, interval - (time.monotonic() - started)))
