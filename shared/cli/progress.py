"""A campaign's progress on stderr: rich's live bar on a terminal, a plain line every few seconds otherwise.

rich rather than tqdm: one well-kept library gives the live bar with our own columns (counts of accepted,
rejected, failed, throttled beside rate and ETA) and the end-of-run summary tables, and it knows when stderr
is not a terminal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

#: Seconds between plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL_SECONDS = 5.0

if TYPE_CHECKING:
    from shared.partner_center.pace import PaceLimiter, PaceWait

#: The counters shown beside the bar, in order.
SHOWN = ("accepted", "rejected", "failed", "throttled")


def waiting_text(wait: PaceWait) -> str | None:
    """Why calls wait now, in words, or None when they do not: a partner-wide pause, or customers held."""
    if wait.paused_for >= 0.5:
        return f"throttled by Partner Center, resuming in {math.ceil(wait.paused_for)} s"
    if wait.customers_held:
        held = "1 customer held" if wait.customers_held == 1 else f"{wait.customers_held} customers held"
        return f"throttled by Partner Center: {held}, retrying in {math.ceil(wait.held_for)} s"
    return None


def pace_waits(pace: PaceLimiter) -> Callable[[], str | None]:
    """What :meth:`CampaignProgress.show_waiting` shows for the runtime's pace of Partner Center calls."""
    return lambda: waiting_text(pace.waiting())


class _TwoLineProgress(Progress):
    """Each task on two lines, so that 80 columns hold it: the bar with done/total, rate and ETA, then the
    counters (which grow with the campaign) on a line of their own; while calls wait for Partner Center, a
    third line says why and for how long (asked at each refresh, so it counts down)."""

    waiting: Callable[[], str | None] = staticmethod(lambda: None)

    def get_renderables(self) -> Iterable[RenderableType]:
        for task in self.tasks:
            yield self.make_tasks_table([task])
            yield Text(f"  {task.fields.get('counts', '')}", no_wrap=True, overflow="ellipsis")
        note = self.waiting()
        if note:
            yield Text(f"  {note}", no_wrap=True, overflow="ellipsis")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "-/s", style="progress.data.speed")


class CampaignProgress:
    """Counts rows as they finish and shows them; thread-safe (worker threads count throttling)."""

    def __init__(
        self,
        total: int,
        description: str,
        *,
        stream: TextIO,
        interval: float = PLAIN_INTERVAL_SECONDS,
        force_terminal: bool | None = None,
    ) -> None:
        self.total = total
        self.description = description
        self.counts: Counter[str] = Counter()
        self.shown: tuple[str, ...] = SHOWN
        self.done = 0
        #: Rows counted without work in this run (kept from a previous run, refused before sending): not in the rate.
        self._carried = 0
        self._stream = stream
        self._interval = interval
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._console = Console(file=stream, force_terminal=force_terminal, stderr=True)
        self.live = self._console.is_terminal
        self._progress: _TwoLineProgress | None = None
        self._task: Any = None
        self._thread: threading.Thread | None = None
        self._waiting: Callable[[], str | None] = lambda: None

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> CampaignProgress:
        self._started = time.monotonic()
        if self.live:
            self._progress = _TwoLineProgress(
                # A long campaign name is cut short rather than pushing the numbers off the line.
                TextColumn("[bold]{task.description}", table_column=Column(max_width=28, no_wrap=True)),
                BarColumn(bar_width=None),
                MofNCompleteColumn(),
                _RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                refresh_per_second=4,
                expand=True,
            )
            self._progress.waiting = self._waiting
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, counts=self._counts_text())
        else:
            self._print_line()
            self._thread = threading.Thread(target=self._plain_loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._progress is not None:
            self._refresh()
            self._progress.stop()
        else:
            if self._thread is not None:
                self._thread.join(1.0)
            self._print_line()

    def show_waiting(self, waiting: Callable[[], str | None]) -> None:
        """Say when and why calls wait (``waiting`` answers the words, or None), e.g. :func:`pace_waits`."""
        self._waiting = waiting
        if self._progress is not None:
            self._progress.waiting = waiting

    # -- counting --------------------------------------------------------------------------------------
    def finished(self, status: str) -> None:
        """One row has its result (``accepted``, ``rejected``, ``failed``, ``skipped``, an outcome...)."""
        with self._lock:
            self.done += 1
            self.counts[status] += 1
        self._refresh()

    def carry(self, statuses: list[str]) -> None:
        """Count rows whose result needed no work now, at the start of a phase: in done/total, not in the rate."""
        with self._lock:
            self.done += len(statuses)
            self._carried += len(statuses)
            self.counts.update(statuses)
            self._started = time.monotonic()
        if self._progress is not None:
            # Starting the task's clock over with them done keeps rich's rate and ETA to the rows still to go.
            self._progress.reset(self._task, total=self.total, completed=self.done, counts=self._counts_text())

    def count(self, name: str, n: int = 1) -> None:
        """Count an event beside the rows, such as a throttled call."""
        with self._lock:
            self.counts[name] += n
        self._refresh()

    def restart(self, total: int, description: str, shown: tuple[str, ...]) -> None:
        """A new phase (following upgrades until they end) with its own total and counters."""
        if self._progress is None:
            self._print_line()  # how the phase before ended
        else:
            self._refresh()
        with self._lock:
            self.total = total
            self.description = description
            self.shown = shown
            self.counts = Counter({"throttled": self.counts["throttled"]})
            self.done = 0
            self._carried = 0
            self._started = time.monotonic()
        if self._progress is not None:
            # The finished phase's bar stays on screen, as it ended; the new phase gets a bar of its own.
            self._task = self._progress.add_task(description, total=total, counts=self._counts_text())
        else:
            self._print_line()

    # -- showing ---------------------------------------------------------------------------------------
    def line(self) -> str:
        """The plain progress line: done/total, rate, ETA and the counters."""
        with self._lock:
            done, total, elapsed = self.done, self.total, time.monotonic() - self._started
            worked = done - self._carried
        rate = worked / elapsed if elapsed > 0 else 0.0
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 and done < total else "-"
        line = f"{self.description}: {done}/{total} done, {rate:.1f}/s, ETA {eta}; {self._counts_text()}"
        note = self._waiting()
        return f"{line}; {note}" if note else line

    def _counts_text(self) -> str:
        with self._lock:
            counts, shown = dict(self.counts), self.shown
        return " ".join(f"{name} {counts.get(name, 0)}" for name in shown)

    def _refresh(self) -> None:
        if self._progress is not None:
            with self._lock:
                done = self.done
            self._progress.update(self._task, completed=done, counts=self._counts_text())

    def _plain_loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._print_line()

    def _print_line(self) -> None:
        print(self.line(), file=self._stream, flush=True)


def summary_tables(counts: Mapping[str, int], errors: Mapping[str, int], outcomes: Mapping[str, int]) -> list[Table]:
    """The end-of-run tables: rows by status, by error code, and (with --wait) by outcome."""
    tables = []
    for title, column, data in (
        ("Rows by status", "status", counts),
        ("Rows by error code", "error code", errors),
        ("Upgrades by outcome", "outcome", outcomes),
    ):
        if not data:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column(column)
        table.add_column("rows", justify="right")
        for name, n in sorted(data.items(), key=lambda item: (-item[1], item[0])):
            table.add_row(name, str(n))
        table.add_row("total", str(sum(data.values())), style="bold")
        tables.append(table)
    return tables


def print_tables(tables: list[Table], stream: TextIO) -> None:
    console = Console(file=stream, width=100)
    for table in tables:
        console.print(table)
