"""``bulk``: a campaign from a CSV, straight to Partner Center with bounded concurrency (or through the queue).

A run reads the CSV and the last run's report (every row validated before anything is sent), sends the rows
through a channel (:class:`~shared.cli.direct.DirectChannel`, or :class:`~shared.cli.enqueue.QueueChannel` with
``--enqueue``), waits for outcomes with ``--wait``, and reports as rows finish. SIGINT or SIGTERM stops sending;
calls in flight finish, the report is written, the exit code is 130. Running the same command again resumes
from the report.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from shared.errors import ProductUpgradeError

from .campaign import Campaign, CampaignFileError, ReportWriter, Result, Row, read_campaign, read_previous_report
from .context import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, Context, Output, UsageError
from .direct import DirectChannel
from .enqueue import QueueChannel
from .pool import Fatal, RowPool
from .progress import CampaignProgress, print_tables, summary_tables


class Channel(Protocol):
    """How a campaign's rows reach Partner Center, and how their outcomes are learnt."""

    @property
    def poll_seconds(self) -> float: ...

    def prepare(self, sending: bool) -> None: ...

    def send(self, rows: list[Row], done: Callable[[Row, Result], None]) -> None: ...

    def outcome(self, row: Row, previous: Result) -> Result | None: ...

    def watching(self, progress: CampaignProgress) -> AbstractContextManager[None]: ...


@dataclass
class Plan:
    """A campaign's rows before anything is sent."""

    kept: dict[int, Result]  # accepted in the last run's report: kept as they were
    settled: list[tuple[Row, Result]]  # refused before sending: invalid rows, repeated customers
    to_send: list[Row]


def plan(campaign: Campaign, previous: dict[tuple[str, str], Result]) -> Plan:
    kept: dict[int, Result] = {}
    settled: list[tuple[Row, Result]] = []
    to_send: list[Row] = []
    for row in campaign.rows:
        if row.error is not None:
            settled.append((row, Result("rejected", error_code="invalid_request", message=row.error)))
        elif row.duplicate_of is not None:
            message = f"customer already listed in row {row.duplicate_of}; sent once"
            settled.append((row, Result("skipped", message=message)))
        elif row.identity in previous:
            kept[row.number] = previous[row.identity]
        else:
            to_send.append(row)
    return Plan(kept, settled, to_send)


def run_bulk(context: Context, args: argparse.Namespace) -> int:
    try:
        campaign = read_campaign(Path(args.file), args.campaign)
        report_path = Path(args.report)
        previous = read_previous_report(report_path)
    except CampaignFileError as exc:
        raise UsageError(str(exc)) from None
    if campaign.recorded is None:
        context.output.warn(
            f"the CSV's name {campaign.name!r} is not a campaign name: no campaign is recorded "
            "(name one with --campaign NAME)"
        )
    return CampaignRun(context, campaign, report_path, plan(campaign, previous), args).execute()


class CampaignRun:
    def __init__(
        self, context: Context, campaign: Campaign, report_path: Path, rows: Plan, args: argparse.Namespace
    ) -> None:
        self.context = context
        self.campaign = campaign
        self.rows = rows
        self.wait = bool(args.wait)
        self.stop = threading.Event()
        self.pool = RowPool(args.concurrency, self.stop)
        kind = QueueChannel if args.enqueue else DirectChannel
        self.channel: Channel = kind(
            context, campaign.name, campaign.recorded, self.pool, check_eligibility=args.check_eligibility
        )
        # Rows kept from a report written with --wait keep their outcome columns, with or without --wait now.
        with_outcomes = self.wait or any(result.outcome for result in rows.kept.values())
        self.report = ReportWriter(report_path, campaign, wait=with_outcomes)
        self.progress = CampaignProgress(len(campaign.rows), f"bulk {campaign.name}", stream=context.output.stderr)

    def execute(self) -> int:
        error: ProductUpgradeError | None = None
        with self._signals(), contextlib.ExitStack() as stack:
            self.report.start(self.rows.kept)
            for row, result in self.rows.settled:
                self.report.write(row, result)
            try:
                self.channel.prepare(sending=bool(self.rows.to_send))
                stack.enter_context(self.channel.watching(self.progress))
                stack.enter_context(self.progress)
                # Rows kept from the last run and rows refused before sending: counted, but not in the rate.
                self.progress.carry(
                    [r.status for r in self.rows.kept.values()] + [r.status for _, r in self.rows.settled]
                )
                self.channel.send(self.rows.to_send, self._sent)
                if self.wait and not self.stop.is_set():
                    self._wait_for_outcomes()
            except Fatal as exc:
                error = exc.error
            except ProductUpgradeError as exc:  # before anything was sent: settings, credentials, a service down
                error = exc
            if error is not None:
                self.stop.set()
        self.report.finish()
        if error is not None:
            # What was done is in the report; the error (exit 3 or 4) says what the operator must fix.
            self.context.output.warn(self.report.summary_line(len(self.campaign.rows)))
            raise error
        return summarize(self.context.output, self.campaign, self.report, self.progress, self.wait, self.stop.is_set())

    def _sent(self, row: Row, result: Result) -> None:
        self.report.write(row, result)
        self.progress.finished(result.status)

    def _wait_for_outcomes(self) -> None:
        results = self.report.results
        rows = {row.number: row for row in self.campaign.rows}
        waiting = {
            number: rows[number]
            for number, result in results.items()
            if result.status == "accepted" and result.upgrade_id and not result.outcome
        }
        ended_before = [result.outcome for result in results.values() if result.status == "accepted" and result.outcome]
        self.progress.restart(
            len(waiting) + len(ended_before),
            f"wait {self.campaign.name}",
            ("completed", "partial", "failed", "throttled"),
        )
        self.progress.carry([outcome for outcome in ended_before if outcome])

        def ended(row: Row, result: Result) -> None:
            self.report.write(row, result)
            self.progress.finished(result.outcome or "failed")

        def check(row: Row) -> Result | None:
            return self.channel.outcome(row, results[row.number])

        self.pool.poll(waiting, check, ended, self.channel.poll_seconds)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT (Ctrl-C) and SIGTERM stop sending and let the calls in flight finish, saying so at once; a
        second one stops waiting for them (their rows are reported as unknown, for the next run to ask again)."""
        output = self.context.output

        def handler(signum: int, frame: FrameType | None) -> None:
            if not self.stop.is_set():
                self.stop.set()
                output.warn(
                    f"stopping: no new rows; finishing the {self.pool.in_flight} calls in flight "
                    "(Ctrl-C again to stop at once: those rows are reported unknown, and the next run asks again)"
                )
            elif not self.pool.abandon.is_set():
                self.pool.abandon.set()
                output.warn(f"stopping now: {self.pool.in_flight} calls in flight are reported unknown")

        previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)


def summarize(
    output: Output, campaign: Campaign, report: ReportWriter, progress: CampaignProgress, wait: bool, interrupted: bool
) -> int:
    """The end of a run: the tables (or the --json document) and the exit code."""
    results = report.results
    counts = Counter(result.status for result in results.values())
    errors = Counter(result.error_code for result in results.values() if result.error_code)
    outcomes = Counter(result.outcome for result in results.values() if result.outcome)
    body: dict[str, Any] = {
        "counts": dict(counts),
        "rows": len(campaign.rows),
        "report": str(report.path),
        "campaign": campaign.name,
        "throttled": progress.counts.get("throttled", 0),
    }
    if wait:
        body["outcomes"] = dict(outcomes)
    if interrupted:
        body["interrupted"] = True
    if not output.as_json:
        print_tables(summary_tables(counts, errors, outcomes), output.stdout)
        output.say(report.summary_line(len(campaign.rows)))
    output.document(body)
    if interrupted:
        output.warn("interrupted: calls in flight finished and the report is written; run again to resume")
        return EXIT_INTERRUPTED
    unsettled = len(campaign.rows) - len(results)
    refused = any(result.status not in ("accepted", "skipped") for result in results.values())
    not_completed = wait and any(
        result.status == "accepted" and result.outcome != "completed" for result in results.values()
    )
    return EXIT_REFUSED if refused or not_completed or unsettled else EXIT_OK
